"""Which transformers Trainer (loss and metrics) a task trains with.

Causal-LM tasks use the stock Trainer's loss, computed only where a label is
learned (answer_loss.py). Classification reports accuracy next to its
cross-entropy. Preference data trains with DPO (Rafailov et al. 2023)
against the frozen base: with PEFT the reference is the same model with the
adapter disabled, so no second copy of the weights is held.

The DPO loss is written here rather than taken from TRL's DPOTrainer: TRL
needs its own DPOConfig arguments, tokenises raw `datasets.Dataset` rows
itself (so its truncation would differ from what ValidateDataset reported)
and brings datasets/pyarrow/pandas along, while the objective is a few lines.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from services.trainer.spec import TrainConfig


def trainer_class_for(
    task: str, cfg: TrainConfig, labelled_logits: bool = False
) -> Any:
    """The Trainer subclass whose compute_loss implements the task's objective.

    `labelled_logits`: causal-LM tasks compute the head and the loss only at
    labelled positions (answer_loss.py; the caller has probed the model).
    """
    if task == "classification":
        return _classification_trainer()
    if task == "preference":
        return _preference_trainer(cfg.preference_beta)
    return _causal_lm_trainer(labelled_logits)


def _causal_lm_trainer(labelled_logits: bool) -> Any:
    import torch
    from transformers import Trainer

    from services.trainer.answer_loss import labelled_loss

    class CausalLMTrainer(Trainer):
        """The stock causal-LM loss, computed at labelled positions only.

        Falls back to the stock path where the sparse one does not apply: a
        caller wanting the logits, label smoothing or a custom loss, and a
        model wrapped for several processes (DDP/FSDP hook their bookkeeping
        into the wrapper's forward, which the sparse path would bypass).
        """

        def _sparse(self, model: Any, inputs: dict) -> bool:
            return (
                labelled_logits
                and "labels" in inputs
                and self.label_smoother is None
                and self.compute_loss_func is None
                and self.accelerator.num_processes == 1
                and model is self.accelerator.unwrap_model(model)
            )

        def compute_loss(
            self, model, inputs, return_outputs=False, num_items_in_batch=None
        ):
            if return_outputs or not self._sparse(model, inputs):
                return super().compute_loss(
                    model, inputs, return_outputs, num_items_in_batch
                )
            # As the model's own loss: over the accumulated batch's labelled
            # tokens when Trainer counted them for it, else over this batch's.
            items = num_items_in_batch if self.model_accepts_loss_kwargs else None
            return labelled_loss(model, inputs, items)

        def prediction_step(
            self, model, inputs, prediction_loss_only, ignore_keys=None
        ):
            if not (prediction_loss_only and self._sparse(model, inputs)):
                return super().prediction_step(
                    model, inputs, prediction_loss_only, ignore_keys
                )
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = labelled_loss(model, inputs)
            return loss.detach(), None, None

    return CausalLMTrainer


def accuracy(prediction: Any) -> dict[str, float]:
    """Share of rows whose highest-scoring class is the label."""
    import numpy as np

    logits = prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {
        "accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())
    }


def _classification_trainer() -> Any:
    from transformers import Trainer

    class ClassificationTrainer(Trainer):
        """Cross-entropy on the class; evaluation adds `eval_accuracy`."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("compute_metrics", accuracy)
            super().__init__(*args, **kwargs)
            # The head's loss is a mean per batch: let Trainer scale it for
            # gradient accumulation.
            self.model_accepts_loss_kwargs = False

    return ClassificationTrainer


def sequence_logps(logits: Any, labels: Any) -> Any:
    """Sum of log-probabilities of each row's answer tokens (labels != -100)."""
    import torch

    logits = logits[:, :-1].float()
    labels = labels[:, 1:]
    mask = labels != -100
    picked = torch.gather(
        logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(policy: Any, reference: Any, beta: float) -> tuple[Any, dict[str, Any]]:
    """DPO on a batch of chosen rows followed by as many rejected rows.

    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))), averaged.
    """
    import torch.nn.functional as F

    n = policy.shape[0] // 2
    chosen = beta * (policy[:n] - reference[:n])
    rejected = beta * (policy[n:] - reference[n:])
    margin = chosen - rejected
    stats = {
        "rewards_chosen": chosen.mean(),
        "rewards_rejected": rejected.mean(),
        "reward_margin": margin.mean(),
        "reward_accuracy": (margin > 0).float().mean(),
    }
    return -F.logsigmoid(margin).mean(), stats


def _preference_trainer(beta: float) -> Any:
    import torch
    from transformers import Trainer

    class PreferenceTrainer(Trainer):
        """DPO loss; logs reward accuracy and margins for train and eval."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False
            self._stats: dict[str, dict[str, list[float]]] = {
                "train": defaultdict(list),
                "eval": defaultdict(list),
            }

        def compute_loss(
            self, model, inputs, return_outputs=False, num_items_in_batch=None
        ):
            ids, mask, labels = (
                inputs["input_ids"],
                inputs["attention_mask"],
                inputs["labels"],
            )
            policy = sequence_logps(
                model(input_ids=ids, attention_mask=mask).logits, labels
            )
            peft_model = self.accelerator.unwrap_model(model)
            with torch.no_grad(), peft_model.disable_adapter():
                reference = sequence_logps(
                    model(input_ids=ids, attention_mask=mask).logits, labels
                )
            loss, stats = dpo_loss(policy, reference, beta)
            split = "train" if model.training else "eval"
            for key, value in stats.items():
                self._stats[split][key].append(float(value.detach()))
            return (loss, stats) if return_outputs else loss

        def prediction_step(
            self, model, inputs, prediction_loss_only, ignore_keys=None
        ):
            inputs = self._prepare_inputs(inputs)
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs)
            return loss.detach(), None, None

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            split = "train" if "loss" in logs else "eval"
            prefix = "" if split == "train" else "eval_"
            for key, values in self._stats[split].items():
                logs[prefix + key] = sum(values) / len(values)
            self._stats[split].clear()
            super().log(logs, *args, **kwargs)

    return PreferenceTrainer
