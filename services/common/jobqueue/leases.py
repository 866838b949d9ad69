"""The jobs one replica runs, and the heartbeat that keeps their leases.

A running job holds a lease its replica renews every third of `lease_s`; a
replica that cannot renew (its database is unreachable) stops a job before
the lease can have lapsed, since another replica may then be resuming it and
two attempts of one job must never run at once. The heartbeat also stops jobs
cancelled through another replica.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.jobqueue.base import Fence

log = logging.getLogger(__name__)


@dataclass
class Held:
    """A job this replica is running: its fence and why it should stop."""

    fence: Fence
    since: float  # when it was claimed (the leases' clock)
    stop: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False  # a user asked
    shutdown: bool = False  # this replica is stopping: requeue
    lost: bool = False  # another replica took the job over: write nothing

    def halt(self, reason: str) -> None:
        setattr(self, reason, True)
        self.stop.set()


class Leases:
    """What this replica holds; `beat()` is one heartbeat (a thread runs it
    every `tick_s` unless the engine was built without one, as tests do)."""

    def __init__(
        self, kind: str, store, lease_s: float, clock: Callable[[], float]
    ) -> None:
        self.kind = kind
        self.store = store
        self.lease_s = lease_s
        # Cancel flags are read every tick; leases renewed every third of a lease.
        self.tick_s = min(0.5, lease_s / 4)
        self.clock = clock
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._renewed = clock()  # the last successful renewal
        self.halted = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: str, fence: Fence) -> Held:
        held = Held(fence, since=self.clock())
        with self._lock:
            self._held[job_id] = held
        return held

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def get(self, job_id: str) -> Held | None:
        with self._lock:
            return self._held.get(job_id)

    def held(self) -> dict[str, Held]:
        with self._lock:
            return dict(self._held)

    def lose(self, job_id: str, held: Held) -> None:
        if not held.lost:
            log.warning(
                "%s job %s was taken over by another worker; stopping it here",
                self.kind,
                job_id,
            )
        held.halt("lost")

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"{self.kind}-heartbeat", daemon=True
        )
        self._thread.start()

    def stop_heartbeat(self, timeout_s: float = 5.0) -> None:
        self.halted.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self.halted.wait(self.tick_s):
            self.beat()

    def beat(self) -> None:
        """Stops jobs cancelled elsewhere, renews leases every third of a lease,
        and fences off jobs whose lease may have lapsed while the database was
        unreachable."""
        held = self.held()
        if not held:
            self._renewed = self.clock()
            return
        try:
            for job_id in self.store.cancel_flags(list(held)):
                if not held[job_id].stop.is_set():
                    held[job_id].halt("cancelled")
            if self.clock() - self._renewed >= self.lease_s / 3:
                fences = {i: h.fence for i, h in held.items() if not h.lost}
                for job_id in self.store.renew(fences, self.lease_s):
                    self.lose(job_id, held[job_id])
                self._renewed = self.clock()
        except Exception:  # noqa: BLE001 - keep beating through DB hiccups
            log.exception("%s: heartbeat failed; retrying", self.kind)
            self._fence_off(held)

    def _fence_off(self, held: dict[str, Held]) -> None:
        now = self.clock()
        for job_id, job in held.items():
            if now - max(self._renewed, job.since) > 0.8 * self.lease_s:
                self.lose(job_id, job)
