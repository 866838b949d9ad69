"""Putting an adapter's weights on a loaded model, and taking them off.

Reading (the files, the weights, a classification adapter's head split from
its LoRA weights) happens outside the model lock; only attaching the read
weights takes it, so the model's batch stops for milliseconds. Adapters are
PEFT adapters of the model, named by digest; a classification adapter's
head is built over the model's body (classifier_head.py) and kept beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.common.modeling import (
    is_classification_adapter,
    require_safetensors_adapter,
)
from services.inference import lora_rows
from services.inference.adapters import AdapterSlot
from services.inference.classifier_head import PendingHead, split_classifier
from services.inference.loaded import LoadedModel


@dataclass
class ReadAdapter:
    """An adapter read from disk, not yet on the model."""

    artifact: Any  # its ArtifactRef
    config: Any  # its PEFT config
    weights: dict[str, Any]  # what PEFT attaches (a classifier's head apart)
    size: int  # bytes of all its weights, head included
    head: PendingHead | None  # a classification adapter's head


def read_adapter(entry: LoadedModel, adapter: Any) -> ReadAdapter:
    """Reads an adapter's files for `entry`'s model (safetensors only)."""
    from peft import PeftConfig
    from peft.utils import load_peft_weights

    path = Path(adapter.local_path)
    require_safetensors_adapter(path)
    config = PeftConfig.from_pretrained(str(path))
    config.inference_mode = True
    device = str(next(entry.model.parameters()).device)
    weights = load_peft_weights(str(path), device=device)
    size = sum(t.numel() * t.element_size() for t in weights.values())
    head = None
    if is_classification_adapter(path, adapter.metadata):
        base_dir = Path(entry.artifact.local_path)
        head = split_classifier(
            entry.model, base_dir, path, adapter.metadata, config, weights
        )
        weights = head.weights
    return ReadAdapter(adapter, config, weights, size, head)


def attach(entry: LoadedModel, read: ReadAdapter, name: str) -> AdapterSlot:
    """Adds the read adapter to the model as `name`, under its lock; returns
    its slot for the adapter cache. A misfit is refused and removed."""
    from peft import PeftModel, set_peft_model_state_dict

    adapter, config = read.artifact, read.config
    with entry.scheduler.model_lock:
        if isinstance(entry.model, PeftModel):
            entry.model.add_adapter(name, config)
        else:
            entry.model = PeftModel(entry.model, config, adapter_name=name)
        loaded = set_peft_model_state_dict(entry.model, read.weights, adapter_name=name)
        stray = [k for k in loaded.unexpected_keys if "lora_" in k]
        if stray:
            entry.model.delete_adapter(name)
            raise FailedPrecondition(
                f"adapter {adapter.id} does not fit model {entry.artifact.id}: "
                f"{len(stray)} weights match no layer (e.g. {stray[0]})"
            )
        entry.model.eval()
        lora_rows.install(entry.model)  # new LoRA layers too (idempotent)
        plain = entry.model.__dict__.setdefault("lorafleet_plain", set())
        if lora_rows.plain_adapter(config):
            plain.add(name)
        if read.head is not None:
            try:
                entry.heads[name] = read.head.build(lora_rows.inner_model(entry.model))
            except FailedPrecondition:
                entry.model.delete_adapter(name)
                plain.discard(name)
                raise
        entry.scheduler.model = entry.model
    return AdapterSlot(
        entry.artifact.id,
        adapter.digest,
        name,
        read.size,
        {adapter.id},
        solo=bool(getattr(config, "use_dora", False)),
        labels=read.head.labels if read.head is not None else [],
    )


def detach(entry: LoadedModel, slot: AdapterSlot) -> None:
    """Removes an adapter (and a classifier's head) from the model."""
    with entry.scheduler.model_lock:
        if slot.name in getattr(entry.model, "peft_config", {}):
            entry.model.delete_adapter(slot.name)
        entry.model.__dict__.get("lorafleet_plain", set()).discard(slot.name)
        entry.heads.pop(slot.name, None)
        entry.scheduler.prefixes.clear_adapter(slot.name)
