"""Classify requests: texts in, a label and the probabilities per text out.

A classifier scores each text in one forward; nothing is generated, so no
decode batch is needed. The texts of one call run in batches (at most
`max_rows` rows and about `max_tokens` padded tokens each, shortest waste
first: sorted by length), each under the model's lock, so generation on the
same base goes on between them. The deadline and cancellation are checked
before each batch, and the wait for the lock never outlives the deadline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
)
from services.inference.prompting import MAX_CHARS_PER_TOKEN

# Texts one Classify call may carry (the proto's documented limit).
MAX_TEXTS = 256

# (input_ids [rows, width], attention_mask [rows, width]) -> logits [rows, classes]
Forward = Callable[[Any, Any], Any]


@dataclass
class ClassifyRequest:
    texts: list[str] = field(default_factory=list)

    def check(self) -> None:
        if not self.texts:
            raise InvalidArgument(
                "texts is empty; pass 1 to 256 texts to classify", field="texts"
            )
        if len(self.texts) > MAX_TEXTS:
            raise InvalidArgument(
                f"texts has {len(self.texts)} entries, more than {MAX_TEXTS}; "
                "split them over several calls",
                field="texts",
            )
        for i, text in enumerate(self.texts):
            if not text.strip():
                raise InvalidArgument(f"texts[{i}] is empty", field=f"texts[{i}]")


@dataclass(frozen=True)
class ClassifiedText:
    label: str
    class_id: int
    probabilities: list[float]  # one per label, in class-id order
    prompt_tokens: int


@dataclass(frozen=True)
class Classification:
    labels: list[str]  # in class-id order
    results: list[ClassifiedText]  # in request order
    prompt_tokens: int
    latency_ms: float  # first forward to the end of the last
    queue_ms: float  # waiting for the model (its lock) before the first


@dataclass(frozen=True)
class Limits:
    """How one call's texts are cut into forwards, and the model's context."""

    max_rows: int
    max_tokens: int
    context: int | None


def text_ids(
    tokenizer: Any, texts: list[str], context: int | None, model_id: str
) -> list[list[int]]:
    """Each text's token ids, tokenized as the trainer tokenized classification
    rows (the tokenizer's own special tokens, no chat template).
    INVALID_ARGUMENT names a text longer than the model's context."""
    ids = []
    for i, text in enumerate(texts):
        if context is not None and len(text) > context * MAX_CHARS_PER_TOKEN:
            raise InvalidArgument(
                f"texts[{i}] has {len(text)} characters, more than model "
                f"{model_id}'s context of {context} tokens can hold; shorten it",
                field=f"texts[{i}]",
            )
        row = tokenizer(text)["input_ids"]
        if not row:
            raise InvalidArgument(f"texts[{i}] has no tokens", field=f"texts[{i}]")
        if context is not None and len(row) > context:
            raise InvalidArgument(
                f"texts[{i}] has {len(row)} tokens, more than model {model_id}'s "
                f"context of {context}; shorten it",
                field=f"texts[{i}]",
            )
        ids.append(row)
    return ids


def batches(lengths: list[int], limits: Limits) -> list[list[int]]:
    """Indices of the texts per forward: longest first, at most max_rows rows
    and max_tokens padded tokens (a longer text still goes, alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out and (
            len(out[-1]) < limits.max_rows
            and lengths[out[-1][0]] * (len(out[-1]) + 1) <= limits.max_tokens
        ):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def classify_texts(
    ids: list[list[int]],
    labels: list[str],
    forward: Forward,
    pad_token_id: int | None,
    device: Any,
    lock: threading.Lock,
    *,
    limits: Limits,
    deadline: float | None,
    clock: Callable[[], float],
    cancelled: threading.Event,
) -> Classification:
    """Runs every text through `forward` on `device`, under `lock` a batch at
    a time, padding rows with `pad_token_id` (None: one text a forward)."""
    import torch

    arrived = clock()
    if pad_token_id is None:  # rows cannot be padded: one text per forward
        limits = Limits(1, limits.max_tokens, limits.context)
    pad = pad_token_id if pad_token_id is not None else 0
    probabilities: dict[int, list[float]] = {}
    started = None
    for rows in batches([len(r) for r in ids], limits):
        if cancelled.is_set():
            raise Cancelled("the request was cancelled")
        left = None if deadline is None else deadline - clock()
        if left is not None and left <= 0:
            raise DeadlineExceeded(
                f"the deadline passed after {len(probabilities)} of {len(ids)} texts"
            )
        width = max(len(ids[i]) for i in rows)
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            tokens[r, : len(ids[i])] = torch.tensor(ids[i])
            mask[r, : len(ids[i])] = 1
        if not lock.acquire(timeout=-1 if left is None else left):
            raise DeadlineExceeded(
                f"the deadline passed waiting for the model after "
                f"{len(probabilities)} of {len(ids)} texts"
            )
        try:
            started = clock() if started is None else started
            with torch.inference_mode():
                logits = forward(tokens.to(device), mask.to(device))
            probs = logits.float().softmax(-1).cpu()
        finally:
            lock.release()
        if probs.shape[-1] != len(labels):
            raise Internal(
                f"the classifier scored {probs.shape[-1]} classes but has "
                f"{len(labels)} labels"
            )
        for r, i in enumerate(rows):
            probabilities[i] = probs[r].tolist()
    assert started is not None
    results = []
    for i, row in enumerate(ids):
        p = probabilities[i]
        best = max(range(len(p)), key=p.__getitem__)
        results.append(ClassifiedText(labels[best], best, p, len(row)))
    return Classification(
        labels=list(labels),
        results=results,
        prompt_tokens=sum(len(r) for r in ids),
        latency_ms=(clock() - started) * 1000.0,
        queue_ms=(started - arrived) * 1000.0,
    )
