"""Merging a classification adapter: the output is a sequence classifier.

The trainer trains classification as `...ForSequenceClassification` over the
base: LoRA on the body, the head (`score`) trained in full and saved with the
adapter. Its merge keeps the base tensors such a classifier has (not the LM
head), merges the LoRA deltas exactly as for any adapter, and adds the head
from the adapter; config.json names the classifier's architecture, its
id2label/label2id and the padding id the head pools by. Which tensors a
classifier of the base's architecture has is read off that model built on the
meta device (no weights, no data read), so nothing is guessed from names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.common.modeling import (
    CLASSIFICATION,
    adapter_class_labels,
    classifier_model_labels,
    classifier_pad_token_id,
    is_classification_adapter,
    recorded_labels,
)
from services.merger.adapter_files import ADAPTER_WEIGHTS, group_adapter_keys
from services.merger.safetensors_io import read_layout, tensor_shapes


@dataclass(frozen=True)
class ClassifierOutput:
    """How a classification merge's output differs from a plain merge's."""

    architecture: str  # e.g. LlamaForSequenceClassification
    labels: tuple[str, ...]  # in class-id order
    pad_token_id: int | None
    head: tuple[tuple[str, str], ...]  # (classifier tensor, adapter key)
    dropped: tuple[str, ...]  # base tensors a classifier has no use for
    labels_recorded: bool  # False: named LABEL_<i> (no class_labels metadata)

    @property
    def head_keys(self) -> dict[str, str]:
        return dict(self.head)

    def config_updates(self) -> dict[str, Any]:
        """What config.json of the merged classifier says beyond the base's."""
        updates: dict[str, Any] = {
            "architectures": [self.architecture],
            "id2label": {str(i): name for i, name in enumerate(self.labels)},
            "label2id": {name: i for i, name in enumerate(self.labels)},
        }
        if self.pad_token_id is not None:
            updates["pad_token_id"] = self.pad_token_id
        return updates

    def facts(self) -> dict[str, Any]:
        """Registry metadata of the merged classifier."""
        return {
            "task_type": CLASSIFICATION,
            "class_labels": list(self.labels),
            "architecture": self.architecture,
            "pad_token_id": self.pad_token_id,
            "dropped_tensors": list(self.dropped),
        }

    def gate_spec(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "pad_token_id": self.pad_token_id}

    def note(self) -> str:
        """Said in the job's notes when the labels had to be named here."""
        if self.labels_recorded:
            return ""
        return (
            "the adapter's metadata records no class_labels, so the merged "
            f"classifier names its classes {', '.join(self.labels)}"
        )


def plan_classifier(
    adapter_dir: Path, base_dir: Path, metadata: Mapping[str, Any]
) -> ClassifierOutput | None:
    """The classifier a classification adapter merges into; None for a
    causal-LM adapter on a causal base (the plain merge).

    Reads configs and headers only. FailedPrecondition names what cannot be
    merged exactly: a classifier as the base (either kind of adapter), an
    architecture transformers has no sequence classifier for, a head of the
    wrong shape, or a tensor the classifier needs that neither file has.
    """
    classifies = is_classification_adapter(adapter_dir, metadata)
    base_labels = classifier_model_labels(base_dir)
    if base_labels is not None:
        kind = "classification" if classifies else "causal-LM"
        raise FailedPrecondition(
            f"the base model at {base_dir} is already a sequence classifier "
            f"(labels {base_labels}); a {kind} adapter merges into the causal "
            "base it was trained on: pass that base as base_model_id",
            field="base_model_id",
        )
    if not classifies:
        return None
    labels = adapter_class_labels(adapter_dir, recorded_labels(metadata))
    architecture, wanted = classifier_tensors(base_dir, len(labels))
    base = read_layout(base_dir).tensors
    shapes = tensor_shapes(adapter_dir / ADAPTER_WEIGHTS)
    _, whole = group_adapter_keys(shapes)
    head = {n: k for n, k in whole.items() if n in wanted and n not in base}
    for name, key in head.items():
        if shapes[key] != wanted[name]:
            raise FailedPrecondition(
                f"adapter tensor {key} has shape {list(shapes[key])} but a "
                f"{architecture} with {len(labels)} labels needs {name} of shape "
                f"{list(wanted[name])}; the adapter was trained on another base",
                field="adapter_id",
            )
    missing = sorted(set(wanted) - set(base) - set(head))
    if missing:
        raise FailedPrecondition(
            f"a {architecture} needs tensor {missing[0]} ({len(missing)} missing), "
            "which neither the base model nor the adapter has; the adapter must "
            "save the classification head (the trainer does)",
            field="adapter_id",
        )
    return ClassifierOutput(
        architecture=architecture,
        labels=tuple(labels),
        pad_token_id=classifier_pad_token_id(base_dir),
        head=tuple(sorted(head.items())),
        dropped=tuple(sorted(set(base) - set(wanted))),
        labels_recorded=bool(recorded_labels(metadata)),
    )


def classifier_tensors(
    base_dir: Path, num_labels: int
) -> tuple[str, dict[str, tuple[int, ...]]]:
    """(architecture, {tensor: shape}) of the base's sequence classifier,
    built on the meta device from config.json."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from services.common.modeling import quiet_transformers

    quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(str(base_dir), local_files_only=True)
        config.num_labels = num_labels
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FailedPrecondition(
            f"cannot build a sequence classifier of the base at {base_dir} "
            f"({type(exc).__name__}: {exc}); a classification adapter merges only "
            "into architectures transformers has a ForSequenceClassification for",
            field="adapter_id",
        ) from exc
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return type(model).__name__, shapes


def check_classifier_plan(
    classifier: ClassifierOutput,
    adapted: set[str],
) -> None:
    """Refuses an adapter that changes base tensors the classifier drops."""
    lost = sorted(adapted & set(classifier.dropped))
    if lost:
        raise FailedPrecondition(
            f"the adapter changes {lost[0]}, which a {classifier.architecture} does "
            "not have (it replaces the LM head with its classification head); "
            "remove it from the adapter's modules_to_save or target_modules",
            field="adapter_id",
        )
