"""What one model or adapter served: counts and means, kept by the engine."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServingStats:
    requests: int = 0
    abandoned: int = 0  # cancelled, past their deadline, or failed
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_ms: float = 0.0  # sums; means divide by `finished`
    first_token_ms: float = 0.0
    finished: int = 0
    token_ms: float = 0.0  # time after the first token, over `later_tokens`
    later_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, seq: Any, outcome: Any) -> None:
        """One request ended: `outcome` is its GenerationResult, or the error."""
        with self._lock:
            self.requests += 1
            self.prompt_tokens += len(seq.input_ids)
            self.completion_tokens += len(seq.generated)
            finished = getattr(outcome, "finish_reason", None)
            if finished is None:
                self.abandoned += 1
                return
            self.finished += 1
            self.queue_ms += outcome.queue_ms
            self.first_token_ms += outcome.first_token_ms
            if outcome.completion_tokens > 1:
                after_first = outcome.latency_ms - (
                    outcome.first_token_ms - outcome.queue_ms
                )
                self.token_ms += max(0.0, after_first)
                self.later_tokens += outcome.completion_tokens - 1

    def record_classify(self, outcome: Any) -> None:
        """One Classify call ended: its Classification, or the error. Its
        wait for the model counts as queueing, its end as its first token."""
        with self._lock:
            self.requests += 1
            prompt_tokens = getattr(outcome, "prompt_tokens", None)
            if prompt_tokens is None:
                self.abandoned += 1
                return
            self.prompt_tokens += prompt_tokens
            self.finished += 1
            self.queue_ms += outcome.queue_ms
            self.first_token_ms += outcome.queue_ms + outcome.latency_ms

    def means(self) -> dict[str, float]:
        with self._lock:
            n = self.finished or 1
            return {
                "mean_queue_ms": self.queue_ms / n,
                "mean_first_token_ms": self.first_token_ms / n,
                "mean_ms_per_token": self.token_ms / (self.later_tokens or 1),
            }
