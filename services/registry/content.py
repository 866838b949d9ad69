"""Per-kind content rules for registration, and the metadata derived from content."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument
from services.common.safetensors_header import check_safetensors_file, read_header
from services.registry.domain import ArtifactKind

# Formats that execute code when loaded (torch.load / pickle): never admitted,
# so nothing the registry hands out can run code in a trainer or server.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

Files = Sequence[tuple[str, Path]]


def inspect_content(kind: ArtifactKind, files: Files) -> dict[str, Any]:
    """Refuses files that do not fit `kind`; returns facts read from them.

    The facts become default metadata (the caller's metadata wins), so every
    model says its architecture and every adapter its rank without the caller
    having to repeat what the files already state.
    """
    if kind is ArtifactKind.DATASET:
        return _dataset(files)
    _refuse_pickles(files)
    for rel, real in files:
        if rel.lower().endswith(".safetensors"):
            check_safetensors_file(real, rel)  # header only, whatever the size
    present = {rel: real for rel, real in files}
    if kind is ArtifactKind.ADAPTER:
        for required in ("adapter_config.json", "adapter_model.safetensors"):
            _require(present, required, kind)
        cfg = _json_object(present["adapter_config.json"], "adapter_config.json")
        return _pick(
            cfg,
            "adapter_config.json",
            {
                "r": "rank",
                "lora_alpha": "alpha",
                "target_modules": "target_modules",
                "base_model_name_or_path": "base_model",
                "peft_type": "peft_type",
            },
        )
    _require(present, "config.json", kind)
    if not any(rel.endswith(".safetensors") for rel in present):
        raise InvalidArgument(
            f"a {kind.value} needs weights in *.safetensors files and source_path "
            f"has none (files: {_sample(present)})",
            field="source_path",
        )
    cfg = _json_object(present["config.json"], "config.json")
    facts = _pick(
        cfg,
        "config.json",
        {"model_type": "model_type", "architectures": "architectures"},
    )
    if "model_type" in facts:  # the proto's word for it, beside Hugging Face's
        facts["architecture"] = facts["model_type"]
    facts.update(_weights_facts(present, cfg))
    return facts


# The first layer index in a tensor name (model.layers.3.mlp... -> 3).
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
_LAYER_KEYS = ("num_hidden_layers", "n_layer")


def _weights_facts(present: dict[str, Path], cfg: dict[str, Any]) -> dict[str, Any]:
    """Parameter and layer counts from the safetensors headers, and a config
    whose layer count disagrees with the weights refused: a layer stack that
    kept its inputs' num_hidden_layers would load with layers silently
    dropped (or missing), so the registry does not take it."""
    parameters = 0
    layers: set[int] = set()
    for rel, real in present.items():
        if not rel.endswith(".safetensors") or "/" in rel:
            continue
        header, _ = read_header(real, rel)
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            parameters += math.prod(entry.get("shape") or [])
            match = _LAYER.search(name)
            if match:
                layers.add(int(match.group(1)))
    facts: dict[str, Any] = {"num_parameters": parameters}
    key = next((k for k in _LAYER_KEYS if isinstance(cfg.get(k), int)), None)
    if key is None:
        return facts
    facts["num_hidden_layers"] = cfg[key]
    if layers and len(layers) != cfg[key]:
        raise InvalidArgument(
            f"config.json says {key} = {cfg[key]} but the weights hold "
            f"{len(layers)} layers (indices {min(layers)}..{max(layers)}); fix "
            f"{key} in config.json (a layer stack must set the new count)",
            field="source_path",
        )
    return facts


def _dataset(files: Files) -> dict[str, Any]:
    rows = 0
    schema: dict[str, set[str]] = {}
    counts = {"invalid": 0}
    for rel, real in files:
        if not rel.endswith(".jsonl"):
            raise InvalidArgument(
                f"dataset file {rel!r} is not JSONL: a DATASET is one .jsonl file or "
                "a directory of .jsonl files",
                field="source_path",
            )
        with open(real, "rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                rows += 1
                _observe(line, schema, counts)
    return {
        "rows": rows,
        "files": len(files),
        # key -> JSON types seen; lets a search or a card say what rows hold
        "schema": {k: sorted(v) for k, v in sorted(schema.items())},
        "invalid_rows": counts["invalid"],
        "task_type": _task_of(schema),
    }


_JSON_TYPES = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "number",
    float: "number",
    type(None): "null",
}


def _observe(line: bytes, schema: dict[str, set[str]], counts: dict[str, int]) -> None:
    try:
        row = json.loads(line)
    except ValueError:
        counts["invalid"] += 1
        return
    if not isinstance(row, dict):
        counts["invalid"] += 1
        return
    for key, value in row.items():
        schema.setdefault(str(key), set()).add(json_type(value))


def json_type(value: Any) -> str:
    """The JSON type name a schema records for a parsed value."""
    return _JSON_TYPES.get(type(value), "other")


def task_of_keys(keys: Iterable[str]) -> str:
    """The task type rows with these keys are detected as."""
    return _task_of({k: set() for k in keys})


def _task_of(schema: dict[str, set[str]]) -> str:
    """The same detection the trainer applies, from the keys rows carry."""
    if "messages" in schema:
        return "chat"
    if {"chosen", "rejected"} & schema.keys():
        return "preference"
    if "completion" in schema:
        return "completion"
    if "instruction" in schema or "output" in schema:
        return "instruction"
    if "label" in schema and "text" in schema:
        return "classification"
    if "text" in schema:
        return "text"
    return "unknown"


def _refuse_pickles(files: Files) -> None:
    for rel, _ in files:
        if rel.lower().endswith(PICKLE_SUFFIXES):
            raise InvalidArgument(
                f"source_path contains {rel!r}, a pickle-format file; pickles run code "
                "when loaded, so only safetensors weights are accepted: re-save with "
                "save_pretrained(..., safe_serialization=True) and remove it",
                field="source_path",
            )


def _require(present: dict[str, Path], name: str, kind: ArtifactKind) -> None:
    if name not in present:
        raise InvalidArgument(
            f"a {kind.value} needs {name} at the top of source_path and it is "
            f"missing (files: {_sample(present)})",
            field="source_path",
        )


def _json_object(path: Path, rel: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(
            f"{rel} is not valid JSON: {exc}", field="source_path"
        ) from exc
    if not isinstance(data, dict):
        raise InvalidArgument(f"{rel} must hold a JSON object", field="source_path")
    return data


def _pick(source: dict[str, Any], rel: str, keys: dict[str, str]) -> dict[str, Any]:
    """The `keys` of a file's JSON object that are set, renamed as metadata.

    Python's json reads NaN and Infinity, which strict JSON (the database's
    JSON functions, protobuf Struct, every other client) cannot represent; a
    version holding them could not be listed, filtered or merged afterwards,
    so they are refused here as they are in request metadata.
    """
    picked = {}
    for src, dst in keys.items():
        if source.get(src) is not None:
            _require_finite(source[src], rel, src)
            picked[dst] = source[src]
    return picked


def _require_finite(value: Any, rel: str, key: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(
            f"{rel}: {key} is {json.dumps(value)}, which is not a finite number "
            "(JSON has no NaN or Infinity); fix the value in the file and register "
            "again",
            field="source_path",
        )
    if isinstance(value, list):
        for i, item in enumerate(value):
            _require_finite(item, rel, f"{key}[{i}]")
    elif isinstance(value, dict):
        for k, item in value.items():
            _require_finite(item, rel, f"{key}.{k}")


def _sample(present: dict[str, Path], limit: int = 8) -> str:
    names = sorted(present)
    more = f", ... {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
