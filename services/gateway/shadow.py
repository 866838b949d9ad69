"""Shadow traffic: a copy of some requests sent to a candidate off the path.

The caller's request is answered by its routed arm first; only then is a copy
queued for each SHADOW arm (with probability mirror_bps / 10000), run by a
small pool of threads, and its latency, errors, quality and agreement with
the answer the caller got recorded under the shadow arm. The queue is bounded:
when it is full the copy is dropped and counted, so shadowing can slow
nothing down, however slow the candidate.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lorafleet.v1 import inference_pb2
from services.common.errors import LorafleetError
from services.gateway.arms import FULL_WEIGHT, Arm
from services.gateway.quality import check_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Copy:
    deployment: str
    arm: Arm
    params: Any  # lorafleet.v1.GenerationParams
    answer: str  # what the caller got
    output_format: str
    blocked_phrases: tuple[str, ...]


class Mirror:
    """Queues and runs shadow copies; `rng` and `clock` are injectable."""

    def __init__(
        self,
        inference: Any,
        recorder: Any,
        *,
        workers: int = 2,
        queue_size: int = 64,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inference = inference
        self._recorder = recorder
        self._rng = rng or random.Random()
        self._clock = clock
        self._queue: queue.Queue[Copy | None] = queue.Queue(maxsize=queue_size)
        self._threads = [
            threading.Thread(target=self._work, name=f"shadow-{i}", daemon=True)
            for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def mirror(
        self,
        deployment: str,
        shadows: list[Arm],
        params: Any,
        answer: str,
        output_format: str = "",
        blocked_phrases: tuple[str, ...] = (),
    ) -> None:
        """Queues a copy for each shadow arm that draws this request."""
        for arm in shadows:
            if self._rng.randrange(FULL_WEIGHT) >= arm.mirror_bps:
                continue
            copy = Copy(deployment, arm, params, answer, output_format, blocked_phrases)
            try:
                self._queue.put_nowait(copy)
            except queue.Full:
                self._recorder.record_dropped(deployment, arm.name)

    def close(self) -> None:
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for t in self._threads:
            t.join(1.0)

    def _work(self) -> None:
        while True:
            copy = self._queue.get()
            if copy is None:
                return
            try:
                self._run(copy)
            except Exception:  # noqa: BLE001 - a shadow must never hurt the gateway
                log.exception("shadow request to %s failed", copy.arm.name)

    def _run(self, copy: Copy) -> None:
        started = self._clock()
        try:
            response = self._inference.Generate(
                inference_pb2.InferenceServiceGenerateRequest(
                    model_id=copy.arm.model_id,
                    adapter_id=copy.arm.adapter_id,
                    params=copy.params,
                )
            )
        except LorafleetError as exc:
            self._recorder.record(
                copy.deployment, copy.arm.name, error_code=exc.code, shadow=True
            )
            return
        text = response.output.text
        self._recorder.record(
            copy.deployment,
            copy.arm.name,
            latency_ms=(self._clock() - started) * 1000.0,
            tokens=response.output.completion_tokens,
            quality=check_output(text, copy.output_format, list(copy.blocked_phrases)),
            shadow=True,
            agreed=text.strip() == copy.answer.strip(),
        )
