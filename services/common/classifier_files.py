"""What a model or adapter directory says about classification (files only).

A classification adapter is PEFT's task_type SEQ_CLS, its head saved in full
beside the LoRA weights; a merged classifier's config.json names a
...ForSequenceClassification architecture and its id2label. Only JSON and
safetensors headers are read: no model is built, nothing is unpickled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.common.convert import from_struct
from services.common.errors import FailedPrecondition

# PEFT's task type of a classification adapter, and the registry's task name.
SEQ_CLS = "SEQ_CLS"
CLASSIFICATION = "classification"
# Modules PEFT saves in full with a SEQ_CLS adapter: the classification head.
HEAD_MODULES = ("score", "classifier")
# The head's output layer, whose rows are the classes.
HEAD_OUTPUTS = ("score.weight", "classifier.out_proj.weight", "classifier.weight")
PEFT_PREFIX = "base_model.model."
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_sequence_classifier(model_dir: Path) -> bool:
    """Whether a model directory holds a sequence classifier (its config.json
    architectures end in ForSequenceClassification)."""
    architectures = read_json(model_dir / "config.json").get("architectures") or []
    return any(str(a).endswith("ForSequenceClassification") for a in architectures)


def classifier_model_labels(model_dir: Path) -> list[str] | None:
    """A merged classifier's labels in class-id order (config.json id2label);
    None when the directory holds no sequence classifier."""
    if not is_sequence_classifier(model_dir):
        return None
    id2label = read_json(model_dir / "config.json").get("id2label") or {}
    try:
        by_id = {int(k): str(v) for k, v in dict(id2label).items()}
    except (TypeError, ValueError):
        by_id = {}
    if not by_id or sorted(by_id) != list(range(len(by_id))):
        raise FailedPrecondition(
            f"classifier {model_dir} has config.json id2label {id2label!r}; it "
            "must name classes 0..n-1"
        )
    return [by_id[i] for i in range(len(by_id))]


def is_classification_adapter(
    adapter_dir: Path, metadata: Mapping[str, Any] | None = None
) -> bool:
    """Whether an adapter is a classifier's: adapter_config.json task_type
    SEQ_CLS (what PEFT writes for the trainer's classifiers). Only when the
    config names no task type does registry `metadata` decide (task_type
    "classification")."""
    task = read_json(adapter_dir / ADAPTER_CONFIG).get("task_type")
    if task:
        return str(task).upper() == SEQ_CLS
    return (metadata or {}).get("task_type") == CLASSIFICATION


def classification_head(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    """The head tensors a classification adapter saved in full, by their name
    in the classifier (e.g. {"score.weight": (2, 64)}); FailedPrecondition
    when there are none (the head would be random)."""
    from safetensors import safe_open

    head: dict[str, tuple[int, ...]] = {}
    with safe_open(str(adapter_dir / ADAPTER_WEIGHTS), framework="pt") as f:
        for key in f.keys():
            name = re.sub(
                r"\.modules_to_save\.[^.]+", "", key.removeprefix(PEFT_PREFIX)
            )
            if name.split(".", 1)[0] in HEAD_MODULES and ".lora_" not in name:
                head[name] = tuple(f.get_slice(key).get_shape())
    if not any(name in head for name in HEAD_OUTPUTS):
        raise FailedPrecondition(
            f"classification adapter {adapter_dir} carries no classification head "
            f"({' or '.join(HEAD_OUTPUTS)} in {ADAPTER_WEIGHTS}); train it with "
            "the trainer, which saves the head with the adapter"
        )
    return head


def adapter_class_labels(
    adapter_dir: Path, labels: list[str] | None = None
) -> list[str]:
    """A classification adapter's labels in class-id order.

    `labels` are the names recorded at training (the registry's
    `class_labels`), checked against the rows of the adapter's head; without
    them the classes are LABEL_<i>, as transformers names them.
    """
    head = classification_head(adapter_dir)
    rows = next(head[n][0] for n in HEAD_OUTPUTS if n in head)
    if not labels:
        return [f"LABEL_{i}" for i in range(rows)]
    names = [str(label) for label in labels]
    if len(names) != rows or len(set(names)) != rows or not all(names):
        raise FailedPrecondition(
            f"adapter {adapter_dir} records labels {names} but its head scores "
            f"{rows} classes; the labels must be {rows} distinct names"
        )
    return names


def recorded_labels(metadata: Mapping[str, Any]) -> list[str] | None:
    """The `class_labels` the trainer recorded in an adapter's metadata."""
    labels = metadata.get("class_labels")
    return [str(x) for x in labels] if isinstance(labels, (list, tuple)) else None


def metadata_of(artifact: Any) -> dict[str, Any]:
    """A registry artifact's metadata as a dict (a Struct or a dict)."""
    meta = artifact.metadata
    if hasattr(meta, "DESCRIPTOR"):  # a Struct (also a Mapping, of ListValues)
        return from_struct(meta)
    return dict(meta)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise FailedPrecondition(f"{path} does not hold a JSON object")
    return data
