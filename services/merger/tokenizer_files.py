"""A recipe's `tokenizer_source` and `chat_template`: the merged model's
tokenizer files.

mergekit builds the output tokenizer from `tokenizer_source` (the base, or a
named model) and re-indexes every embedding to that vocabulary. lorafleet
takes the named model's tokenizer as it is and requires every merged model to
share its vocabulary (token -> id), which makes the re-indexing the identity
and the result mergekit's; models with other vocabularies are refused up front
rather than merged row by row into the wrong tokens.

`chat_template` follows mergekit: "auto" takes the template most input models
carry, a name takes a bundled template (chatml, llama3, alpaca, mistral,
exaone), anything else is the Jinja text itself. It is written as
`chat_template.jinja`, which transformers reads before tokenizer_config.json.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.merger.output import copy_synced, write_synced

# The files that make up a Hugging Face tokenizer (and its chat template).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


def vocabulary(model_dir: Path) -> dict[str, int] | bytes | None:
    """The token -> id map of a model's tokenizer (tokenizer.json), or the raw
    bytes of its vocabulary file when it has no tokenizer.json; None without
    a tokenizer."""
    path = model_dir / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
    for name in ("tokenizer.model", "vocab.json"):
        if (model_dir / name).is_file():
            return (model_dir / name).read_bytes()
    return None


def check_shared_vocabulary(source: Path, models: list[Path]) -> None:
    """Refuses models whose vocabulary differs from the tokenizer source's."""
    wanted = vocabulary(source)
    if wanted is None:
        raise FailedPrecondition(
            f"tokenizer_source {source.name} has no tokenizer files (none of "
            "tokenizer.json, tokenizer.model, vocab.json)",
            field="recipe",
        )
    for model in models:
        if model == source:
            continue
        have = vocabulary(model)
        if have is not None and have != wanted:
            sizes = (
                f" ({len(have)} tokens against {len(wanted)})"
                if isinstance(have, dict) and isinstance(wanted, dict)
                else ""
            )
            raise FailedPrecondition(
                f"{model.name}'s vocabulary differs from tokenizer_source "
                f"{source.name}'s{sizes}; lorafleet merges models that share a "
                "vocabulary (it does not re-index embeddings to another "
                "tokenizer)",
                field="recipe",
            )


def _template_of(model_dir: Path) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        try:
            template = json.loads(path.read_text()).get("chat_template")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(template, list):  # named templates: the default one
            template = next(
                (t.get("template") for t in template if t.get("name") == "default"),
                None,
            )
        if isinstance(template, str) and template:
            return template
    return None


def resolve_chat_template(setting: str, models: list[Path]) -> str:
    """The template text for a recipe's chat_template ("" keeps the source's)."""
    if not setting:
        return ""
    if setting == "auto":
        found = [t.strip() for t in (_template_of(m) for m in models) if t]
        return Counter(found).most_common(1)[0][0] if found else ""
    bundled = resources.files("services.merger") / "chat_templates"
    if (bundled / f"{setting}.jinja").is_file():
        return (bundled / f"{setting}.jinja").read_text()
    return setting


def write_tokenizer(
    out_dir: Path,
    files: dict[str, tuple[str, int]],
    source: Path | None,
    chat_template: str,
) -> dict[str, tuple[str, int]]:
    """`files` (name -> digest, size) after replacing the tokenizer with
    `source`'s and writing `chat_template`; each write is fsynced and hashed."""
    files = dict(files)
    if source is not None:
        for name in TOKENIZER_FILES:
            if name in files:
                (out_dir / name).unlink()
                del files[name]
            if (source / name).is_file():
                files[name] = copy_synced(source / name, out_dir / name)
    if chat_template:
        for name in ("chat_template.json",):
            if name in files:
                (out_dir / name).unlink()
                del files[name]
        config_path = out_dir / "tokenizer_config.json"
        if config_path.is_file():
            config: dict[str, Any] = json.loads(config_path.read_text())
            if "chat_template" in config:
                del config["chat_template"]
                data = (json.dumps(config, indent=2) + "\n").encode()
                files["tokenizer_config.json"] = write_synced(config_path, data)
        files["chat_template.jinja"] = write_synced(
            out_dir / "chat_template.jinja", chat_template.encode()
        )
    return files
