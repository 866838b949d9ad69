"""A model the torch engine holds: its weights, tokenizer, scheduler, heads.

A causal LM decodes in its BatchScheduler, with LoRA adapters attached by
digest (PEFT multi-adapter). A classification adapter attaches the same way
and adds a head over the shared body (`heads`, see classifier_head.py). A
merged classifier (`labels` set) only serves Classify; its scheduler, which
holds the model lock every forward takes, never has a request to decode.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.common.generation import eos_ids
from services.common.modeling import (
    is_sequence_classifier,
    load_causal_lm,
    load_classifier,
    load_tokenizer,
)
from services.inference import lora_rows
from services.inference.adapters import AdapterSlot
from services.inference.engine import AdapterInfo, ModelInfo
from services.inference.prompting import context_of
from services.inference.scheduler import BatchScheduler, SchedulerSettings
from services.inference.stats import ServingStats


@dataclass
class LoadedModel:
    artifact: Any
    model: Any
    tokenizer: Any
    scheduler: BatchScheduler
    context_tokens: int | None  # the model's positions; None if it has no limit
    eos: frozenset[int]
    parameters: int = 0
    bytes: int = 0  # its own weights (adapters not included)
    pinned: bool = False
    last_used: float = 0.0  # wall clock
    base_stats: ServingStats = field(default_factory=ServingStats)
    gates: dict[str, threading.Lock] = field(default_factory=dict)  # per digest
    # A merged sequence classifier's labels (class-id order); empty for an LM.
    labels: list[str] = field(default_factory=list)
    # Classification adapters' heads over this model's body, by PEFT name.
    heads: dict[str, Any] = field(default_factory=dict)

    def refuse_adapters(self) -> None:
        """A merged classifier takes no adapter (its head is already merged)."""
        if self.labels:
            raise FailedPrecondition(
                f"model {self.artifact.id} is a merged sequence classifier (labels "
                f"{self.labels}); it takes no adapter: call Classify with model_id "
                "alone, or pass the adapter with its causal base model",
                field="adapter_id",
            )

    def classifier(self, slot: AdapterSlot | None) -> tuple[list[str], Any, Any, Any]:
        """(labels, forward, padding id, device) of this merged classifier, or
        (`slot`) of a classification adapter's head over this model's body.

        `forward(input_ids, attention_mask)` returns the class logits; the
        caller holds the model lock. A plain LoRA adapter runs through
        lora_rows (the same operations as PEFT's); one PEFT must run itself
        (DoRA, body modules_to_save) is made the active adapter first.
        """
        if slot is None:
            model, labels, name = self.model, self.labels, ""
        else:
            model, labels, name = self.heads[slot.name], slot.labels, slot.name
        peft_model = self.model

        def forward(input_ids: Any, attention_mask: Any) -> Any:
            inputs = dict(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            )
            if not name:
                return model(**inputs).logits
            if name in getattr(peft_model, "lorafleet_plain", ()):
                with lora_rows.rows([name] * input_ids.shape[0]):
                    return model(**inputs).logits
            peft_model.set_adapter(name)
            peft_model.base_model.enable_adapter_layers()
            return model(**inputs).logits

        device = next(model.parameters()).device
        return list(labels), forward, model.config.pad_token_id, device


def refuse_generation(model_id: str, labels: list[str] | None) -> None:
    """Generate on a merged classifier (`labels`) is FailedPrecondition."""
    if labels:
        raise FailedPrecondition(
            f"model {model_id} is a merged sequence classifier (labels {labels}); "
            "it scores labels and cannot generate: call Classify with it",
            field="model_id",
        )


def check_classify_target(
    model_id: str, adapter_id: str, labels: list[str] | None
) -> None:
    """Classify needs a merged classifier (`labels`) alone, or a causal base
    with a classification adapter (checked as it loads)."""
    if labels is None and not adapter_id:
        raise FailedPrecondition(
            f"model {model_id} is a causal language model, not a classifier; pass "
            "a classification adapter on it as adapter_id, or a merged classifier "
            "as model_id (Generate serves this model)",
            field="adapter_id",
        )
    if labels is not None and adapter_id:
        raise FailedPrecondition(
            f"model {model_id} is a merged sequence classifier (labels {labels}); "
            "it takes no adapter: call Classify with model_id alone, or pass the "
            "adapter with the causal base it was trained on",
            field="adapter_id",
        )


def wrong_adapter_kind(adapter_id: str, classifies: bool) -> FailedPrecondition:
    """The error for Generate with a classification adapter (`classifies`),
    or Classify with a causal-LM one."""
    if classifies:
        return FailedPrecondition(
            f"adapter {adapter_id} is a classification adapter: it scores labels "
            "and cannot generate; call Classify with it, or Generate with a "
            "causal-LM adapter",
            field="adapter_id",
        )
    return FailedPrecondition(
        f"adapter {adapter_id} is a causal-LM adapter, not a classifier; Classify "
        "needs a classification adapter (trained on {'text', 'label'} rows) or a "
        "merged classifier as model_id; call Generate with this one",
        field="adapter_id",
    )


def load_model(
    artifact: Any, device: str, settings: SchedulerSettings, clock: Any
) -> LoadedModel:
    """Loads a registry model (its ArtifactRef) with its tokenizer and starts
    its scheduler: a causal LM, or a merged classifier (Classify only)."""
    path = Path(artifact.local_path)
    labels: list[str] = []
    if is_sequence_classifier(path):
        model, labels = load_classifier(path, device)
    else:
        model = load_causal_lm(path, device)
    model.eval()
    tokenizer = load_tokenizer(path)
    weights = list(model.parameters())
    return LoadedModel(
        parameters=sum(p.numel() for p in weights),
        bytes=sum(p.numel() * p.element_size() for p in weights),
        artifact=artifact,
        model=model,
        tokenizer=tokenizer,
        scheduler=BatchScheduler(artifact.id, model, tokenizer, settings, clock=clock),
        context_tokens=context_of(model),
        eos=frozenset() if labels else frozenset(eos_ids(model, tokenizer)),
        labels=labels,
    )


def peft_name(digest: str) -> str:
    return "d_" + "".join(c for c in digest if c.isalnum())[:40]


def model_info(entry: LoadedModel, slots: list[AdapterSlot]) -> ModelInfo:
    """ListLoadedModels' record of a model and its adapters (`slots`)."""
    sched = entry.scheduler
    waiting, decoding = sched.pending()
    return ModelInfo(
        model_id=entry.artifact.id,
        kind_name=entry.artifact.kind_name,
        name=entry.artifact.name,
        parameters=entry.parameters,
        device=str(next(entry.model.parameters()).device),
        bytes=entry.bytes,
        pinned=entry.pinned,
        last_used=entry.last_used,
        queued_requests=waiting,
        batch_rows=decoding,
        decode_steps=sched.steps,
        mean_batch_rows=sched.rows_stepped / sched.steps if sched.steps else 0.0,
        base_stats=entry.base_stats,
        adapters=[
            AdapterInfo(
                adapter_ids=sorted(slot.ids),
                digest=slot.digest,
                bytes=slot.bytes,
                hits=slot.hits,
                loads=slot.loads,
                last_used=slot.last_used,
                pinned=slot.pinned,
                active_requests=slot.active,
                stats=slot.stats,
                labels=list(slot.labels),
            )
            for slot in slots
        ],
        task="classification" if entry.labels else "causal",
        labels=list(entry.labels),
    )
