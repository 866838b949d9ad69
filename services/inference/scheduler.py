"""Continuous batching for one loaded model: requests join and leave between steps.

One thread per model runs the loop. Each turn it drops requests whose caller
is gone (cancelled, or past its deadline), prefills waiting requests while the
batch has room and the turn's prompt-token budget lasts, then runs one decode
step for every row at once, whatever its adapter. A row that finishes (end of
sequence, its max_new_tokens, a stop string) leaves at once; the others go on.

Results travel back on each request's own event queue, so a unary call waits
for its "done" and a stream relays every "delta" as the batch produces it.
The wait queue is bounded: a full one refuses at submit (RESOURCE_EXHAUSTED
with a retry hint) instead of growing without bound.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from services.common import instruments
from services.common.errors import (
    Cancelled,
    DeadlineExceeded,
    Internal,
    ResourceExhausted,
)
from services.inference.batch import DecodeBatch, prefill
from services.inference.prefix_cache import PrefixCache
from services.inference.requests import GenerationResult
from services.inference.sampling import RowSampler

log = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"  # a token that ends inside a multi-byte character


@dataclass(frozen=True)
class SchedulerSettings:
    max_batch: int = 8  # rows decoding together
    max_queue: int = 64  # requests waiting to join; more are refused
    prefill_tokens_per_step: int = 2048  # prompt tokens prefilled per turn
    retry_after_s: float = 1.0  # the hint a refused caller gets
    prefix_cache_bytes: int = 256 << 20  # kept prompt prefixes (0: none)


@dataclass(eq=False)
class Sequence:
    """One request as the scheduler sees it (identity-hashed: a batch key)."""

    input_ids: list[int]
    adapter: str
    max_new_tokens: int
    sampler: RowSampler
    eos: frozenset[int]
    stop: tuple[str, ...] = ()
    deadline: float | None = None  # on the scheduler's clock
    id: int = field(default_factory=itertools.count(1).__next__)
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    emitted: str = ""
    submitted_at: float = 0.0
    started_at: float = 0.0
    first_token_at: float = 0.0
    # Called once when the request ends, however: (it, its result or the error).
    on_end: Callable[[Sequence, Any], None] | None = None
    # Its adapter cannot share a mixed-adapter forward (PEFT refuses DoRA in
    # one): it decodes in a batch of its own adapter's rows.
    solo: bool = False
    ended: bool = False

    def cancel(self) -> None:
        """The caller is gone: the row leaves at the next turn."""
        self.cancelled.set()

    def results(self) -> Iterator[tuple[str, GenerationResult | None]]:
        """(text delta, None) as text appears, then ("", its result); raises the
        request's error. Blocks between events."""
        while True:
            kind, value = self.events.get()
            if kind == "delta":
                yield value, None
            elif kind == "done":
                yield "", value
                return
            else:
                raise value


class BatchScheduler:
    """Runs every request for one model through a shared decode batch."""

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        settings: SchedulerSettings = SchedulerSettings(),
        *,
        model_lock: threading.Lock | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings
        # Held for each forward; adapter loading takes it to change the model.
        self.model_lock = model_lock or threading.Lock()
        self._clock = clock
        self._waiting: deque[Sequence] = deque()
        # One batch per forward group: every row that PEFT can mix shares "",
        # each adapter it cannot mix (DoRA) has its own (see batch.py).
        self._batches: dict[str, DecodeBatch] = {}
        self._rows: dict[Sequence, int] = {}  # row -> its last token
        self._cond = threading.Condition()
        self._closed = False
        self.prefixes = PrefixCache(settings.prefix_cache_bytes)
        self.steps = 0  # decode steps run (tests and stats)
        self.rows_stepped = 0  # rows over all steps: occupancy = this / steps
        self._thread = threading.Thread(
            target=self._loop, name=f"batch-{name}", daemon=True
        )
        self._thread.start()

    # --- the caller's side ----------------------------------------------------------
    def submit(self, seq: Sequence) -> Sequence:
        with self._cond:
            if self._closed:
                raise Cancelled(f"model {self.name} was unloaded; retry the request")
            if len(self._waiting) >= self.settings.max_queue:
                raise ResourceExhausted(
                    f"inference queue for {self.name} is full "
                    f"({self.settings.max_queue} requests waiting); retry shortly, "
                    "or raise inference_max_queue",
                    retry_after_s=self.settings.retry_after_s,
                    quota_subject=f"inference queue of {self.name}",
                )
            seq.submitted_at = self._clock()
            self._waiting.append(seq)
            self._cond.notify()
        return seq

    def pending(self) -> tuple[int, int]:
        """(waiting, decoding) right now."""
        with self._cond:
            return len(self._waiting), len(self._rows)

    def close(self) -> None:
        """Stops the loop; every request still here ends with CANCELLED."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # --- the loop -------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._rows:
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted = self._take_waiting()
                try:
                    self._turn(admitted)
                except Exception as exc:  # noqa: BLE001 - fail the rows, keep serving
                    log.exception("batch step for %s failed", self.name)
                    error = Internal(f"generation on {self.name} failed: {exc}")
                    for seq in [*admitted, *self._rows]:
                        _end(seq, "error", error)
                    self._rows.clear()
                    self._batches = {}
        error = Cancelled(f"model {self.name} was unloaded; retry the request")
        with self._cond:
            gone = [*self._waiting, *self._rows]
            self._waiting.clear()
        for seq in gone:
            _end(seq, "error", error)

    def _take_waiting(self) -> list[Sequence]:
        """Waiting requests that fit this turn (under the lock)."""
        room = self.settings.max_batch - len(self._rows)
        budget = self.settings.prefill_tokens_per_step
        taken: list[Sequence] = []
        while self._waiting and len(taken) < room:
            seq = self._waiting[0]
            # The first one always goes, however long: it must run some time.
            if taken and len(seq.input_ids) > budget:
                break
            budget -= len(seq.input_ids)
            taken.append(self._waiting.popleft())
        return taken

    def _turn(self, admitted: list[Sequence]) -> None:
        self._drop_gone()
        for seq in admitted:
            if self._gone(seq):
                continue
            seq.started_at = self._clock()
            with self.model_lock:
                first = prefill(
                    self.model, seq.input_ids, seq.adapter, seq.solo, self.prefixes
                )
            if not self._advance(seq, seq.sampler.choose(first.logits)):
                group = seq.adapter if seq.solo else ""
                batch = self._batches.setdefault(group, DecodeBatch(solo=seq.solo))
                batch.join(seq, seq.adapter, first)
                self._rows[seq] = seq.generated[-1]
        done = set()
        for batch in list(self._batches.values()):
            keys = list(batch.keys)
            with self.model_lock:
                logits = batch.step(self.model, [self._rows[k] for k in keys])
            self.steps += 1
            self.rows_stepped += len(keys)
            instruments.record(
                instruments.batch_occupancy,
                len(self._rows) / self.settings.max_batch,
                {"lorafleet.model": self.name},
            )
            for i, seq in enumerate(keys):
                token = seq.sampler.choose(logits[i])
                if self._advance(seq, token):
                    done.add(seq)
                else:
                    self._rows[seq] = token
        self._leave(done)

    def _drop_gone(self) -> None:
        gone = {seq for seq in self._rows if self._gone(seq)}
        self._leave(gone)
        with self._cond:
            for seq in [s for s in self._waiting if self._gone(s)]:
                self._waiting.remove(seq)

    def _leave(self, gone: set[Sequence]) -> None:
        if gone:
            for group, batch in list(self._batches.items()):
                batch.leave(gone)
                if not len(batch):
                    del self._batches[group]
            for seq in gone:
                self._rows.pop(seq, None)

    def _gone(self, seq: Sequence) -> bool:
        """Whether a request's caller has left; tells the caller why if so."""
        if seq.cancelled.is_set():
            _end(seq, "error", Cancelled("the request was cancelled"))
            return True
        if seq.deadline is not None and self._clock() >= seq.deadline:
            _end(
                seq,
                "error",
                DeadlineExceeded(
                    f"the deadline passed after {len(seq.generated)} of "
                    f"{seq.max_new_tokens} new tokens"
                ),
            )
            return True
        return False

    def _advance(self, seq: Sequence, token: int) -> bool:
        """Adds a token to a request, sends its new text; True when it is done."""
        now = self._clock()
        if not seq.generated:
            seq.first_token_at = now
        seq.generated.append(token)
        reason = ""
        if token in seq.eos:
            reason = "eos"
        text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        cut = _first_stop(text, seq.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        elif not reason and len(seq.generated) >= seq.max_new_tokens:
            reason = "length"
        if reason:
            self._send(seq, text)
            _end(seq, "done", self._finished(seq, text, reason, now))
            return True
        self._send(seq, text[: _safe_end(text, seq.stop)])
        return False

    @staticmethod
    def _send(seq: Sequence, text: str) -> None:
        if len(text) > len(seq.emitted) and text.startswith(seq.emitted):
            seq.events.put(("delta", text[len(seq.emitted) :]))
            seq.emitted = text

    def _finished(
        self, seq: Sequence, text: str, reason: str, now: float
    ) -> GenerationResult:
        model = {"lorafleet.model": self.name}
        instruments.record(
            instruments.time_to_first_token,
            seq.first_token_at - seq.submitted_at,
            model,
        )
        for kind, count in (
            ("prompt", len(seq.input_ids)),
            ("completion", len(seq.generated)),
        ):
            instruments.add(
                instruments.inference_tokens,
                count,
                {**model, "lorafleet.token.type": kind},
            )
        return GenerationResult(
            text=text,
            prompt_tokens=len(seq.input_ids),
            completion_tokens=len(seq.generated),
            finish_reason=reason,
            latency_ms=(now - seq.started_at) * 1000.0,
            queue_ms=(seq.started_at - seq.submitted_at) * 1000.0,
            first_token_ms=(seq.first_token_at - seq.submitted_at) * 1000.0,
        )


def _end(seq: Sequence, kind: str, value: Any) -> None:
    """Delivers a request's last event ("done" or "error") and tells its
    owner, once: a request can only end one way."""
    if seq.ended:
        return
    seq.ended = True
    seq.events.put((kind, value))
    if seq.on_end is not None:
        try:
            seq.on_end(seq, value)
        except Exception:  # noqa: BLE001 - bookkeeping must not stop the batch
            log.exception("recording the end of a request failed")


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be sent now: not a trailing partial character,
    nor a tail that may still grow into a stop string."""
    end = len(text)
    while end and text[end - 1] == REPLACEMENT:
        end -= 1
    for stop in stops:
        for n in range(min(len(stop) - 1, end), 0, -1):
            if text[end - n : end] == stop[:n]:
                end -= n
                break
    return end
