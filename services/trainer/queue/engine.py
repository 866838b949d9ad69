"""A job engine whose queue lives in a database, shared by trainer replicas.

Same public surface as the in-memory `services.common.jobs.JobEngine` (submit,
get, list, cancel, watch, shutdown), so `services.common.convert.JobRpcs`
serves it unchanged. Differences that make it survive restarts and replicas:

* Jobs and their progress events are rows; any replica answers Get/List/Watch.
* `job_workers` threads per replica claim jobs (priority desc, age asc) with
  `FOR UPDATE SKIP LOCKED` on PostgreSQL, BEGIN IMMEDIATE on SQLite.
* A running job holds a lease its replica renews; a job whose lease expired
  (the replica died) is reclaimed by any replica and run again (attempt + 1,
  resuming from its checkpoints). A restarted replica gives up its old
  leases at once. A graceful shutdown puts running jobs back in the queue.
* Cancel sets a flag in the database; the running replica sees it within a
  heartbeat (~0.5 s) and stops the job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from services.common.errors import (
    Cancelled,
    LorafleetError,
    ResourceExhausted,
)
from services.common.jobs import Job, JobEvent, JobState
from services.common.paging import decode_token, encode_token, page_size
from services.common.telemetry import current_trace_id
from services.trainer.queue.models import TrainJobEventRow, TrainJobRow, as_utc
from services.trainer.queue.store import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    Fence,
    JobStore,
    Update,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lorafleet.trainer.queue")


@dataclass
class QueuedJob(Job):
    """A snapshot of one persisted job, shaped like the in-memory engine's Job."""

    priority: int = 0
    attempt: int = 0
    worker_id: str = ""
    resumed_from_step: int = 0


@dataclass(frozen=True)
class Codec:
    """Turns a job's domain spec and result into JSON-able dicts and back."""

    encode_spec: Callable[[Any], dict] = dict
    decode_spec: Callable[[dict], Any] = dict
    encode_result: Callable[[Any], dict] = lambda r: dict(r or {})
    decode_result: Callable[[dict], Any] = dict


@dataclass
class _Active:
    """A job this replica is running: its fence and why it should stop."""

    fence: Fence
    stop: threading.Event = field(default_factory=threading.Event)
    since: float = field(default_factory=time.monotonic)  # when it was claimed
    cancelled: bool = False  # a user asked
    shutdown: bool = False  # this replica is stopping: requeue
    lost: bool = False  # another replica took the job over: write nothing

    def halt(self, reason: str) -> None:
        setattr(self, reason, True)
        self.stop.set()


class QueueJobContext:
    """What a runner may do: report progress, check for cancellation."""

    def __init__(self, engine: PersistedJobEngine, active: _Active, job: QueuedJob):
        self._engine = engine
        self._active = active
        self.job = job

    @property
    def cancelled(self) -> bool:
        """True once the job should stop: cancelled, shutting down or taken over."""
        return self._active.stop.is_set()

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled(f"job {self.job.id} was cancelled")

    def report(
        self,
        *,
        stage: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        metrics: dict[str, float] | None = None,
        step: int = 0,
        total_steps: int = 0,
    ) -> None:
        if self._active.lost:
            return  # taken over (or abandoned): the new owner reports now
        update = Update(stage, progress, message, metrics, step, total_steps)
        if not self._engine._store.report(self.job.id, self._active.fence, update):
            self._engine._lost(self.job.id, self._active)

    def set_resumed_from_step(self, step: int) -> None:
        """Records the checkpoint step this attempt resumed from."""
        self.job.resumed_from_step = step
        store = self._engine._store
        if not store.set_resumed_from_step(self.job.id, self._active.fence, step):
            self._engine._lost(self.job.id, self._active)


Runner = Callable[[QueueJobContext, Any], Any]


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class PersistedJobEngine:
    """Runs jobs of one kind from a database queue on `workers` threads."""

    def __init__(
        self,
        kind: str,
        runner: Runner,
        store: JobStore,
        *,
        worker_id: str = "",
        workers: int = 1,
        queue_size: int = 16,
        history: int = 256,
        lease_s: float = 60.0,
        poll_s: float = 0.5,
        codec: Codec | None = None,
        on_end: Callable[[str], None] | None = None,
        start: bool = True,
    ) -> None:
        self.kind = kind
        self.worker_id = worker_id or default_worker_id()
        self._runner = runner
        self._store = store
        self._workers = max(1, workers)
        self._queue_size = queue_size
        self._history = history
        self._lease_s = lease_s
        self._poll_s = poll_s
        # Heartbeat: cancel flags every tick; leases renewed every third of a lease.
        self._tick = min(0.5, lease_s / 4)
        self._codec = codec or Codec()
        self._on_end = on_end
        self._active: dict[str, _Active] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._halted = threading.Event()
        self._threads: list[threading.Thread] = []
        self._heart: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Gives up this worker id's old leases, then starts claiming jobs."""
        taken = self._store.expire_leases_of(self.worker_id)
        if taken:
            log.info(
                "%s: %d job(s) left running by an earlier %s resume now",
                self.kind,
                taken,
                self.worker_id,
            )
        self._threads = [
            threading.Thread(
                target=self._work, name=f"{self.kind}-worker-{i}", daemon=True
            )
            for i in range(self._workers)
        ]
        self._heart = threading.Thread(
            target=self._heartbeat, name=f"{self.kind}-heartbeat", daemon=True
        )
        self._heart.start()
        for t in self._threads:
            t.start()

    # --- submission and queries ---------------------------------------------------
    def submit(self, spec: Any, priority: int = 0) -> QueuedJob:
        if self._stopping.is_set():
            raise ResourceExhausted(
                f"the {self.kind} service is shutting down; retry against "
                "another replica"
            )
        row = self._store.submit(
            f"{self.kind}-{uuid.uuid4().hex[:16]}",
            spec=self._codec.encode_spec(spec),
            priority=priority,
            trace_id=current_trace_id(),
            queue_size=self._queue_size,
            kind=self.kind,
        )
        with self._wake:
            self._wake.notify()
        return self._snapshot(row)

    def get(self, job_id: str) -> QueuedJob:
        return self._snapshot(self._store.get(job_id, self.kind))

    def list(
        self, state: JobState | None, page_size_: int, page_token: str
    ) -> tuple[list[QueuedJob], str]:
        size = page_size(page_size_)
        scope = f"{self.kind}:{state.name if state else '*'}"
        offset = decode_token(page_token, scope)
        rows = self._store.list(state.name if state else None, offset, size + 1)
        token = encode_token(offset + size, scope) if len(rows) > size else ""
        return [self._snapshot(r) for r in rows[:size]], token

    def cancel(self, job_id: str) -> QueuedJob:
        row = self._store.request_cancel(job_id)
        if row is None:
            self._store.get(job_id, self.kind)  # raises NOT_FOUND
        with self._lock:
            active = self._active.get(job_id)
        if active is not None:
            active.halt("cancelled")  # ours: no need to wait for the heartbeat
        elif row.state == CANCELLED:
            self._ended(job_id)
        return self._snapshot(row)

    def watch(
        self,
        job_id: str,
        after_sequence: int = 0,
        alive: Callable[[], bool] = lambda: True,
        poll_s: float = 0.25,
    ) -> Iterator[tuple[JobEvent, QueuedJob]]:
        """Yields (event, job) for every event after `after_sequence` until the end.

        Polls the events table, so a watcher on any replica sees every event.
        """
        index = max(0, after_sequence)
        first = True
        while True:
            row, events = self._store.job_and_events(job_id, index)
            if row is None:
                if first:
                    self._store.get(job_id, self.kind)  # raises NOT_FOUND
                return  # pruned while watched
            first = False
            job = self._snapshot(row)
            for event in events:
                yield _event(event), job
            if events:
                index = events[-1].sequence
            if job.state.terminal and index >= row.last_sequence:
                return
            if events and index < row.last_sequence:
                continue  # more were waiting than one read returns
            if not alive():
                return
            time.sleep(poll_s)

    def shutdown(self, wait_s: float = 0.0, stop_s: float = 60.0) -> None:
        """Stops claiming; jobs still running after `wait_s` are stopped and put
        back in the queue (another replica, or this one restarted, resumes them).
        """
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + wait_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            running = list(self._active.values())
        for active in running:
            active.halt("shutdown")
        deadline = time.monotonic() + stop_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._halted.set()
        if self._heart is not None:
            self._heart.join(5.0)

    def abandon(self) -> None:
        """Stops this replica without telling the database, as a kill would.

        Running jobs stay RUNNING under this worker's lease until it expires
        (or this worker id starts again). For tests and for fencing a replica.
        """
        self._stopping.set()
        self._halted.set()
        with self._lock:
            running = list(self._active.values())
        for active in running:
            active.halt("lost")
        with self._wake:
            self._wake.notify_all()
        for t in [*self._threads, self._heart]:
            if t is not None:
                t.join(10.0)

    # --- internals ----------------------------------------------------------------
    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                row = self._store.claim(self.worker_id, self._lease_s)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill a worker
                log.exception("%s: claiming a job failed; retrying", self.kind)
                self._stopping.wait(max(self._poll_s, 1.0))
                continue
            if row is None:
                with self._wake:
                    if not self._stopping.is_set():
                        self._wake.wait(self._poll_s)
                continue
            try:
                self._run(row)
            except Exception:  # noqa: BLE001
                log.exception("%s job %s: recording its end failed", self.kind, row.id)

    def _run(self, row: TrainJobRow) -> None:
        active = _Active(Fence(self.worker_id, row.attempt))
        with self._lock:
            self._active[row.id] = active
        if self._halted.is_set():
            active.halt("lost")
        elif self._stopping.is_set():
            active.halt("shutdown")
        job = self._snapshot(row)
        try:
            with tracer.start_as_current_span(
                f"{self.kind}.job",
                attributes={
                    "lorafleet.job_id": job.id,
                    "lorafleet.attempt": job.attempt,
                },
            ):
                if active.stop.is_set():
                    raise Cancelled("stopped before it started")
                result = self._runner(QueueJobContext(self, active, job), job.spec)
            # Fenced: a replica that lost the job records nothing.
            ended = not active.lost and self._store.finish(
                job.id,
                active.fence,
                SUCCEEDED,
                "succeeded",
                result=self._codec.encode_result(result),
            )
        except BaseException as exc:  # noqa: BLE001 - a job must never kill a worker
            ended = self._failed(job, active, exc)
        finally:
            with self._lock:
                self._active.pop(job.id, None)
        if ended:
            self._ended(job.id)

    def _failed(self, job: QueuedJob, active: _Active, exc: BaseException) -> bool:
        """Records how a run ended early; True when the job reached its end."""
        store, fence = self._store, active.fence
        if active.lost:
            log.warning(
                "%s job %s: %s no longer holds it; leaving it to its new owner",
                self.kind,
                job.id,
                self.worker_id,
            )
            return False
        stopped = isinstance(exc, Cancelled) or (
            active.stop.is_set() and not isinstance(exc, LorafleetError)
        )
        if stopped and (active.cancelled or not active.shutdown):
            return store.finish(job.id, fence, CANCELLED, "cancelled")
        if stopped:
            store.requeue(
                job.id,
                fence,
                f"requeued: trainer {self.worker_id} is shutting down; the job "
                "resumes from its last checkpoint",
            )
            return False
        if isinstance(exc, LorafleetError):
            code, message = exc.code, exc.message
            log.warning("%s job %s failed: %s %s", self.kind, job.id, code, message)
        elif isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
            code = "RESOURCE_EXHAUSTED"
            message = (
                f"ran out of memory: {exc}. Use a smaller batch_size or "
                "max_seq_length, enable gradient checkpointing, or use QLoRA"
            )
        else:
            log.exception("%s job %s crashed", self.kind, job.id)
            code, message = "INTERNAL", f"{type(exc).__name__}: {exc}"
        return store.finish(job.id, fence, FAILED, message, error=(code, message))

    def _ended(self, job_id: str) -> None:
        if self._on_end is not None:
            try:
                self._on_end(job_id)
            except Exception:  # noqa: BLE001
                log.exception(
                    "%s job %s: end-of-job clean-up failed", self.kind, job_id
                )
        try:
            self._store.prune(self._history)
        except Exception:  # noqa: BLE001
            log.exception("%s: pruning finished jobs failed", self.kind)

    def _lost(self, job_id: str, active: _Active) -> None:
        if not active.lost:
            log.warning(
                "%s job %s was taken over by another trainer; stopping it here",
                self.kind,
                job_id,
            )
        active.halt("lost")

    def _heartbeat(self) -> None:
        renewed = time.monotonic()  # the last successful renewal
        while not self._halted.wait(self._tick):
            with self._lock:
                active = dict(self._active)
            if not active:
                renewed = time.monotonic()
                continue
            try:
                for job_id in self._store.cancel_flags(list(active)):
                    if not active[job_id].stop.is_set():
                        active[job_id].halt("cancelled")
                if time.monotonic() - renewed >= self._lease_s / 3:
                    fences = {i: a.fence for i, a in active.items() if not a.lost}
                    for job_id in self._store.renew(fences, self._lease_s):
                        self._lost(job_id, active[job_id])
                    renewed = time.monotonic()
            except Exception:  # noqa: BLE001 - keep beating through DB hiccups
                log.exception("%s: heartbeat failed; retrying", self.kind)
                self._fence_off(active, renewed)

    def _fence_off(self, active: dict[str, _Active], renewed: float) -> None:
        """Stops jobs whose lease may have expired while the database was
        unreachable: another replica may be resuming them from the same
        checkpoints, and two trainings must never write them at once."""
        now = time.monotonic()
        for job_id, job in active.items():
            if now - max(renewed, job.since) > 0.8 * self._lease_s:
                self._lost(job_id, job)

    def _snapshot(self, row: TrainJobRow) -> QueuedJob:
        state = JobState[row.state]
        job = QueuedJob(
            id=row.id,
            spec=self._codec.decode_spec(row.spec),
            state=state,
            stage=row.stage,
            progress=row.progress,
            message=row.message,
            create_time=_seconds(row.create_time),
            start_time=_seconds(row.start_time),
            end_time=_seconds(row.end_time),
            error_code=row.error_code,
            error_message=row.error_message,
            result=self._codec.decode_result(row.result)
            if row.result is not None
            else None,
            trace_id=row.trace_id,
            priority=row.priority,
            attempt=row.attempt,
            worker_id=row.worker_id,
            resumed_from_step=row.resumed_from_step,
        )
        if row.cancel_requested:
            job.cancel_requested.set()
        return job


def _seconds(value: Any) -> float | None:
    value = as_utc(value)
    return value.timestamp() if value is not None else None


def _event(row: TrainJobEventRow) -> JobEvent:
    return JobEvent(
        sequence=row.sequence,
        state=JobState[row.state],
        stage=row.stage,
        progress=row.progress,
        message=row.message,
        metrics={k: float(v) for k, v in (row.metrics or {}).items()},
        time=_seconds(row.time) or 0.0,
        step=row.step,
        total_steps=row.total_steps,
    )
