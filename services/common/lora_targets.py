"""Which modules LoRA adapts (or trains in full), per architecture, checked up front.

Built on the meta device from config.json, so a Start call can check a
request's target_modules and modules_to_save in well under a second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

# LoRA targets per architecture (model_type in config.json). Attention and MLP
# projections, matching the common Axolotl/PEFT recipes; anything else falls
# back to PEFT's "all-linear".
TARGET_MODULES: dict[str, list[str]] = {
    "llama": [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ],
    "mistral": [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ],
    "qwen2": [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ],
    "gemma": [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "bloom": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


def default_target_modules(model_type: str) -> list[str] | str:
    return TARGET_MODULES.get(model_type, "all-linear")


def adaptable_module_names(path: Path) -> list[str]:
    """Dotted names of the Linear/Conv1D modules LoRA can adapt in a model dir.

    Built on the meta device from config.json, so no weights are read and a
    Start call can check target_modules in well under a second.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    model = meta_model(path)
    if model is None:
        return []
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D))
    ]


def model_module_names(path: Path, *, classification: bool = False) -> list[str]:
    """Dotted names of every module of the model a training run would build.

    modules_to_save may name any module (embeddings, norms, heads), not only
    the Linear ones LoRA adapts. `classification` builds the sequence
    classifier the trainer uses for classification datasets, whose head is
    "score" where a causal LM has "lm_head". Empty when the architecture
    cannot be built on the meta device (the check is then left to training).
    """
    model = meta_model(path, classification=classification)
    if model is None:
        return []
    return [name for name, _ in model.named_modules() if name]


def meta_model(path: Path, *, classification: bool = False) -> Any:
    """The model of `path` on the meta device (no weights), or None if unbuildable."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    from services.common.modeling import quiet_transformers

    quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            f"cannot read the model config in {path}: {exc}"
        ) from exc
    auto = (
        AutoModelForSequenceClassification if classification else AutoModelForCausalLM
    )
    try:
        with torch.device("meta"):
            return auto.from_config(config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        # An architecture that cannot be built here is left to PEFT's own check.
        log.warning("cannot list modules of %s on the meta device: %s", path, exc)
        return None


def leaf_names(module_names: list[str]) -> list[str]:
    """Distinct last components, in first-seen order: what users type as targets."""
    return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in module_names))


def unmatched_targets(targets: list[str], module_names: list[str]) -> list[str]:
    """Targets that match no module the way PEFT matches (exact or dotted suffix)."""
    return [
        t
        for t in targets
        if not any(n == t or n.endswith("." + t) for n in module_names)
    ]


def check_target_modules(targets: list[str], module_names: list[str]) -> None:
    """Refuses target_modules entries that would adapt nothing, naming real ones."""
    missing = unmatched_targets(targets, module_names)
    if module_names and missing:
        raise InvalidArgument(
            f"target_modules {missing} match no Linear/Conv1D module of this model; "
            f"its adaptable modules are {leaf_names(module_names)} "
            "(leave target_modules empty to choose them by architecture)",
            field="config.target_modules",
        )


def check_modules_to_save(modules_to_save: list[str], module_names: list[str]) -> None:
    """Refuses modules_to_save entries naming no module, listing those that exist.

    `module_names` is `model_module_names(base_dir, ...)` of the base model.
    Matching is PEFT's (exact or dotted suffix), so what passes here is what
    get_peft_model accepts; without this, a typo fails the job minutes later
    instead of the Start call. An empty `module_names` (architecture not
    buildable on the meta device) checks nothing.
    """
    missing = unmatched_targets(modules_to_save, module_names)
    if module_names and missing:
        shown = [n for n in leaf_names(module_names) if n and not n.isdigit()]
        raise InvalidArgument(
            f"modules_to_save {missing} match no module of this model; its "
            f"modules are {shown}; name one of them (or a dotted suffix such as "
            "'model.embed_tokens') to train it in full",
            field="config.modules_to_save",
        )
