"""Base model + LoRA config -> the PEFT model to train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument
from services.common.modeling import (
    default_target_modules,
    load_causal_lm,
    model_type_of,
)
from services.trainer.data import PreparedData
from services.trainer.spec import TrainConfig


def build_peft_model(
    base_dir: Path, cfg: TrainConfig, device: str, data: PreparedData | None = None
) -> tuple[Any, list[str] | str]:
    """Loads the base and wraps it in a fresh LoRA adapter: (model, targets).

    `data` is the prepared dataset, for task-specific heads (e.g. label count).
    """
    from peft import LoraConfig, get_peft_model

    model = load_causal_lm(base_dir, device)
    targets = cfg.target_modules or default_target_modules(model_type_of(base_dir))
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        use_rslora=cfg.method == "rslora",
        use_dora=cfg.method == "dora",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise InvalidArgument(
            f"cannot apply LoRA to target_modules {targets}: {exc}",
            field="config.target_modules",
        ) from exc
    return model, targets
