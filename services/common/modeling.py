"""Loading models, tokenizers and adapters safely (safetensors only, local only)."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

from services.common.convert import from_struct
from services.common.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

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


def resolve_device(requested: str) -> str:
    import torch

    if requested and requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def require_safetensors_model(path: Path) -> None:
    """Refuses a model directory unless its weights are safetensors."""
    if not (path / "config.json").is_file():
        raise FailedPrecondition(f"model directory {path} has no config.json")
    if not any(path.glob("*.safetensors")):
        pickled = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = (
            f" (found {', '.join(pickled)}: pickle formats are never loaded)"
            if pickled
            else ""
        )
        raise FailedPrecondition(
            f"model directory {path} has no .safetensors weights{hint}; "
            "convert it with `lorafleet models import`"
        )


def require_safetensors_adapter(path: Path) -> None:
    if not (path / "adapter_config.json").is_file():
        raise FailedPrecondition(f"adapter directory {path} has no adapter_config.json")
    if not (path / "adapter_model.safetensors").is_file():
        raise FailedPrecondition(
            f"adapter directory {path} has no adapter_model.safetensors "
            "(pickled adapter_model.bin files are never loaded)"
        )


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: Path, device: str = "cpu", dtype: Any = None, quantization: Any = None
):
    """Loads a causal LM from safetensors; `dtype` None keeps float32 on CPU.

    `quantization` is a transformers quantization config (e.g. `nf4_config()`):
    the weights are quantised while loading, straight onto `device`.
    """
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, path, device, dtype, quantization)


def load_sequence_classifier(
    path: Path,
    labels: list[str],
    pad_token_id: int | None,
    device: str = "cpu",
    dtype: Any = None,
    quantization: Any = None,
):
    """A base model with a fresh classification head over `labels` (id order).

    The head needs a padding id to find each row's last real token; the
    tokenizer's is used when the base config has none.
    """
    import json

    from transformers import AutoModelForSequenceClassification

    extra: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if config.get("pad_token_id") is None and pad_token_id is not None:
        extra["pad_token_id"] = pad_token_id
    return _from_pretrained(
        AutoModelForSequenceClassification, path, device, dtype, quantization, **extra
    )


def _from_pretrained(
    auto_class: Any, path: Path, device: str, dtype: Any, quantization: Any, **extra
):
    import torch

    require_safetensors_model(path)
    quiet_transformers()
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "use_safetensors": True,
        "dtype": dtype,
        **extra,
    }
    if quantization is not None:
        # Quantised weights cannot be moved after loading: place them now.
        kwargs.update(quantization_config=quantization, device_map={"": device})
        return auto_class.from_pretrained(str(path), **kwargs)
    return auto_class.from_pretrained(str(path), **kwargs).to(device)


def nf4_config(compute_dtype: Any):
    """QLoRA's base quantisation: 4-bit NF4 with double quantisation."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def quiet_transformers() -> None:
    """Progress bars belong in Watch streams, not in service logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def default_target_modules(model_type: str) -> list[str] | str:
    return TARGET_MODULES.get(model_type, "all-linear")


def adaptable_module_names(path: Path) -> list[str]:
    """Dotted names of the Linear/Conv1D modules LoRA can adapt in a model dir.

    Built on the meta device from config.json, so no weights are read and a
    Start call can check target_modules in well under a second.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    model = _meta_model(path)
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
    model = _meta_model(path, classification=classification)
    if model is None:
        return []
    return [name for name, _ in model.named_modules() if name]


def _meta_model(path: Path, *, classification: bool = False) -> Any:
    """The model of `path` on the meta device (no weights), or None if unbuildable."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

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


def model_type_of(path: Path) -> str:
    import json

    try:
        return json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read {path / 'config.json'}: {exc}") from exc


def environment_facts() -> dict[str, Any]:
    """Library versions and hardware, recorded with every trained adapter."""
    import peft
    import torch
    import transformers

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cuda": torch.version.cuda or "",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "cpu_threads": torch.get_num_threads(),
    }
    return facts


def check_adapter_base(adapter: Any, model: Any) -> None:
    """An adapter applies only to the base it was trained on (same digest)."""
    meta = adapter.metadata
    meta = meta if isinstance(meta, dict) else from_struct(meta)
    base_digest = meta.get("base_model_digest", "")
    if meta.get("base_model_id") != model.id and base_digest != model.digest:
        raise FailedPrecondition(
            f"adapter {adapter.id} was trained on base "
            f"{meta.get('base_model_id', '?')} "
            f"(digest {base_digest or '?'}) but model {model.id} "
            f"(digest {model.digest}) "
            "was given; pass the adapter's own base model"
        )
