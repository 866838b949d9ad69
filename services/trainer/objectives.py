"""Which transformers Trainer (loss and metrics) a task trains with.

Causal-LM tasks use the stock Trainer; task types with their own objective
(classification metrics, preference optimisation) plug in here.
"""

from __future__ import annotations

from typing import Any

from services.trainer.spec import TrainConfig


def trainer_class_for(task: str, cfg: TrainConfig) -> Any:
    """The Trainer subclass whose compute_loss implements the task's objective."""
    from transformers import Trainer

    return Trainer
