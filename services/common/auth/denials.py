"""Audit records of refused mutation attempts, written off the request path.

A refused call must answer at once and must not let a flood of bad calls
stall the service, so records go through a bounded queue to one thread; when
the queue is full, records are dropped and counted (the log says how many).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Denial:
    """One refused call: who (as far as known), what, where, and why."""

    principal: str
    method: str
    project: str
    code: str
    reason: str
    message: str
    trace_id: str = ""


class DenialAudit:
    def __init__(self, record: Callable[[Denial], None], capacity: int = 1024) -> None:
        self._record = record
        self._queue: queue.Queue[Denial | None] = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self._thread = threading.Thread(
            target=self._drain, name="auth-denial-audit", daemon=True
        )
        self._thread.start()

    def submit(self, denial: Denial) -> None:
        try:
            self._queue.put_nowait(denial)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                log.warning(
                    "auth: %d refused-call audit records dropped (queue full)",
                    self.dropped,
                )

    def flush(self, timeout_s: float = 5.0) -> None:
        """Waits until every submitted record is written (tests, shutdown)."""
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (self._queue.join(), done.set()))
        waiter.daemon = True
        waiter.start()
        done.wait(timeout_s)

    def close(self) -> None:
        self.flush()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def _drain(self) -> None:
        while True:
            denial = self._queue.get()
            try:
                if denial is None:
                    return
                self._record(denial)
            except Exception:  # noqa: BLE001 - auditing must not stop serving
                log.exception("auth: cannot record a refused call")
            finally:
                self._queue.task_done()
