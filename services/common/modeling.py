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


def load_causal_lm(path: Path, device: str = "cpu", dtype: Any = None):
    """Loads a causal LM from safetensors; `dtype` None keeps float32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    require_safetensors_model(path)
    quiet_transformers()
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, use_safetensors=True, dtype=dtype
    )
    return model.to(device)


def quiet_transformers() -> None:
    """Progress bars belong in Watch streams, not in service logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def default_target_modules(model_type: str) -> list[str] | str:
    return TARGET_MODULES.get(model_type, "all-linear")


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
