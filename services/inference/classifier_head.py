"""A classification adapter's head over a loaded base's shared body.

The trainer's classifier is `...ForSequenceClassification`: the base's body
(LoRA-adapted) and a head trained in full (`score`). Served on a base that is
already loaded, the adapter's LoRA weights join the base's other adapters
(one copy of the base weights, the adapter cache's byte budget), and the
head becomes a `...ForSequenceClassification` whose body *is* the loaded
model's body module: transformers' own forward (last non-padding token,
the head) over the shared weights, with nothing copied but the head.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.common.modeling import (
    adapter_class_labels,
    classifier_pad_token_id,
    recorded_labels,
)

PEFT_PREFIX = "base_model.model."


@dataclass
class PendingHead:
    """A classification adapter read from disk, its head not yet built."""

    labels: list[str]
    weights: dict[str, Any]  # the adapter's, less the head: PEFT attaches them
    head: dict[str, Any]  # the head's tensors by name in the classifier
    pad_token_id: int | None

    def build(self, causal_lm: Any) -> Any:
        return build_head(causal_lm, self.head, self.labels, self.pad_token_id)


def split_classifier(
    model: Any,
    base_dir: Path,
    adapter_dir: Path,
    metadata: dict[str, Any],
    config: Any,
    weights: dict[str, Any],
) -> PendingHead:
    """Splits a classification adapter for `model` (the causal LM loaded from
    `base_dir`, or the PeftModel around it): LoRA layers and body
    modules_to_save go to PEFT (`config.modules_to_save` loses the head), the
    head is built apart, with the padding id the trainer gave it."""
    causal_lm = model.base_model.model if hasattr(model, "peft_config") else model
    labels = adapter_class_labels(adapter_dir, recorded_labels(metadata))
    body, head = split_head(weights, body_prefix(causal_lm))
    kept = [m for m in config.modules_to_save or [] if m not in head_modules(head)]
    config.modules_to_save = kept or None
    return PendingHead(labels, body, head, classifier_pad_token_id(base_dir))


def body_prefix(causal_lm: Any) -> str:
    """The attribute holding a transformers model's body ("model", "transformer")."""
    prefix = getattr(causal_lm, "base_model_prefix", "")
    if not prefix or not hasattr(causal_lm, prefix):
        raise FailedPrecondition(
            f"a {type(causal_lm).__name__} exposes no body module to put a "
            "classification head on; merge the classification adapter and serve "
            "the merged classifier instead"
        )
    return prefix


def split_head(
    weights: dict[str, Any], prefix: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the adapter's weights for PEFT, the head's by classifier name).

    The head is every tensor saved in full outside the body (`score.weight`);
    LoRA weights and modules_to_save inside the body stay with PEFT.
    """
    body: dict[str, Any] = {}
    head: dict[str, Any] = {}
    for key, tensor in weights.items():
        name = re.sub(r"\.modules_to_save\.[^.]+", "", key.removeprefix(PEFT_PREFIX))
        if ".lora_" in name or name.split(".", 1)[0] == prefix:
            body[key] = tensor
        else:
            head[name] = tensor
    return body, head


def head_modules(head: dict[str, Any]) -> set[str]:
    """Top-level module names of the head ("score")."""
    return {name.split(".", 1)[0] for name in head}


def build_head(
    causal_lm: Any, head: dict[str, Any], labels: list[str], pad_token_id: int | None
) -> Any:
    """A `...ForSequenceClassification` over `causal_lm`'s own body module.

    `causal_lm` is the transformers model inside the PeftModel (LoRA layers
    in place); `head` the adapter's head tensors. Every head parameter must
    come from `head`, and every `head` tensor must fit one: a head that would
    start random, or tensors of another shape, are refused.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    prefix = body_prefix(causal_lm)
    body = getattr(causal_lm, prefix)
    param = next(body.parameters())
    config = copy.deepcopy(causal_lm.config)
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.pad_token_id = pad_token_id
    try:
        with torch.device("meta"):
            shell = AutoModelForSequenceClassification.from_config(config)
    except (ValueError, KeyError, TypeError) as exc:
        raise FailedPrecondition(
            f"transformers has no sequence classifier for a {config.model_type} "
            f"model ({exc}); merge the classification adapter and serve the "
            "merged classifier instead"
        ) from exc
    if getattr(shell, "base_model_prefix", "") != prefix:
        raise FailedPrecondition(
            f"a {type(shell).__name__} keeps its body under "
            f"{shell.base_model_prefix!r}, the loaded model under {prefix!r}; "
            "merge the classification adapter and serve the merged classifier"
        )
    setattr(shell, prefix, body)
    for name, child in shell.named_children():
        if name != prefix:
            child.to_empty(device=param.device)
            child.to(dtype=param.dtype)
    try:
        missing, unexpected = shell.load_state_dict(head, strict=False)
    except RuntimeError as exc:  # a shape that does not fit
        raise FailedPrecondition(
            f"the adapter's classification head does not fit this model: {exc}"
        ) from exc
    missing = [m for m in missing if not m.startswith(prefix + ".")]
    if missing or unexpected:
        raise FailedPrecondition(
            f"the adapter's classification head {sorted(head)} does not match a "
            f"{type(shell).__name__}'s (missing {missing}, unexpected "
            f"{list(unexpected)})"
        )
    return shell.eval()
