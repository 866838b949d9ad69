"""The durable job engine: every service's jobs live in its own database.

Same surface as the in-memory `services.common.jobs.MemoryJobEngine` (submit,
find, get, list, cancel, watch, shutdown) and the same JobContext for
runners, so `services.common.convert.JobRpcs` serves either. What makes it
survive restarts and replicas:

* Jobs and their progress events are rows; any replica answers Get/List/Watch.
* `workers` threads per replica claim jobs (priority desc, age asc) with
  `FOR UPDATE SKIP LOCKED` on PostgreSQL, BEGIN IMMEDIATE on SQLite.
* A running job holds a lease its replica renews; a job whose lease expired
  (the replica died) is reclaimed by any replica and run again (attempt + 1),
  with the details its runner recorded, so it continues where it was. A
  restarted replica (same worker id) takes its old jobs back at once. A
  graceful shutdown puts running jobs back in the queue.
* Cancel sets a flag in the database; the running replica sees it within a
  heartbeat (~0.5 s) and stops the job.
* Each attempt's span is a child of the submitting request's span (its
  traceparent is stored with the job) and links to the previous attempt's.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Observation

from services.common.auth.caller import acting_as, current_caller
from services.common.auth.permissions import READ, RUN
from services.common.errors import Cancelled, LorafleetError
from services.common.instruments import job_duration, job_queues, record
from services.common.jobqueue.leases import Held, Leases
from services.common.jobqueue.snapshots import Codec, snapshot
from services.common.jobqueue.snapshots import event as event_of
from services.common.jobqueue.store import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    Fence,
    JobStore,
    NewJob,
)
from services.common.jobs.context import JobContext
from services.common.jobs.model import (
    Job,
    JobEvent,
    JobState,
    Runner,
    Update,
    check_job_access,
    failure,
    owner_of,
    queue_full,
    shutting_down,
    submitter,
)
from services.common.paging import decode_token, encode_token, page_size
from services.common.telemetry import (
    context_from_traceparent,
    current_trace_id,
    current_traceparent,
    span_context_of,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lorafleet.jobqueue")


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _queue_depths(engine: DurableJobEngine) -> list[Observation]:
    """The queue's waiting and running jobs (the database's count: the same
    for every replica of a service, so aggregate with max, not sum)."""
    return [
        Observation(
            engine.store.count(state),
            {"lorafleet.job.kind": engine.kind, "lorafleet.job.state": state.lower()},
        )
        for state in ("QUEUED", "RUNNING")
    ]


class DurableJobEngine:
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
        history: int = 0,
        retention_s: float = 14 * 86400.0,
        lease_s: float = 60.0,
        poll_s: float = 0.5,
        codec: Codec | None = None,
        on_end: Callable[[str], None] | None = None,
        start: bool = True,
        heartbeat: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`heartbeat=False` runs no heartbeat thread (a test calls `beat()`);
        `clock` measures lease renewals and fencing (monotonic seconds)."""
        self.kind = kind
        self.worker_id = worker_id or default_worker_id()
        self.store = store
        self._runner = runner
        self._workers = max(1, workers)
        self._queue_size = queue_size
        self._history = history
        self._retention_s = retention_s
        self.lease_s = lease_s
        self._poll_s = poll_s
        self._codec = codec or Codec()
        self._on_end = on_end
        self._leases = Leases(kind, store, lease_s, clock)
        self.tick_s = self._leases.tick_s
        self._wake = threading.Condition()
        self._claiming = threading.Lock()  # held by the one polling worker
        self._stopping = threading.Event()
        self._lifecycle = threading.Lock()  # start and shutdown, one at a time
        self._threads: list[threading.Thread] = []
        self._beating = heartbeat
        if start:
            self.start()

    def start(self) -> None:
        """Gives up this worker id's old leases, then starts claiming jobs.
        A shutdown that comes meanwhile waits for it (the lifecycle lock),
        and a start after a shutdown does nothing."""
        with self._lifecycle:
            if not self._stopping.is_set():
                self._start()

    def _start(self) -> None:
        for job_id in self.store.expire_leases_of(self.worker_id):
            log.info(
                "%s job %s was left running by an earlier %s; taking it back",
                self.kind,
                job_id,
                self.worker_id,
            )
        self._threads = [
            threading.Thread(
                target=self._work, name=f"{self.kind}-worker-{i}", daemon=True
            )
            for i in range(self._workers)
        ]
        if self._beating:
            self._leases.start_heartbeat()
        for t in self._threads:
            t.start()
        job_queues.add(self, _queue_depths)

    # --- submission and queries ---------------------------------------------------
    def submit(
        self,
        spec: Any,
        *,
        priority: int = 0,
        request_id: str = "",
        digest: str = "",
        details: dict[str, Any] | None = None,
        job_id: str = "",
    ) -> Job:
        """Queues a job; a request id already used returns that job instead.

        `details` are the job's first recorded facts (see JobContext.record);
        `job_id` is the id to give it (from `new_id`), for a caller that must
        record the id elsewhere first.
        """
        if self._stopping.is_set():
            raise shutting_down(self.kind)
        project, owner = submitter()
        row, created = self.store.submit(
            NewJob(
                project=project,
                owner=owner,
                id=job_id or self.new_id(),
                spec=self._codec.encode_spec(spec),
                priority=priority,
                trace_id=current_trace_id(),
                trace_context=current_traceparent(),
                request_id=request_id,
                request_digest=digest,
                details=dict(details or {}),
            ),
            queue_size=self._queue_size,
            kind=self.kind,
        )
        if created:
            with self._wake:
                self._wake.notify()
        else:
            log.info(
                "%s: request %s was already accepted as job %s",
                self.kind,
                request_id,
                row.id,
            )
        return snapshot(row, self._codec)

    def new_id(self) -> str:
        return f"{self.kind}-{uuid.uuid4().hex[:16]}"

    def check_room(self) -> None:
        """RESOURCE_EXHAUSTED now if a submit would find the queue full (lets a
        caller refuse before doing anything a refusal would leave behind)."""
        waiting = self.store.count("QUEUED")
        if waiting >= self._queue_size:
            raise queue_full(self.kind, waiting)

    def find(self, request_id: str, digest: str = "") -> Job | None:
        row = self.store.find(request_id, digest)
        return snapshot(row, self._codec) if row is not None else None

    def get(self, job_id: str) -> Job:
        job = snapshot(self.store.get(job_id, self.kind), self._codec)
        return check_job_access(self.kind, job, READ)

    def list(
        self, state: JobState | None, page_size_: int, page_token: str
    ) -> tuple[list[Job], str]:
        size = page_size(page_size_)
        visible = current_caller().projects_with(READ)
        scope = f"{self.kind}:{state.name if state else '*'}:{sorted(visible or ())}"
        offset = decode_token(page_token, scope)
        rows = self.store.list(state.name if state else None, offset, size + 1, visible)
        token = encode_token(offset + size, scope) if len(rows) > size else ""
        return [snapshot(r, self._codec) for r in rows[:size]], token

    def cancel(self, job_id: str) -> Job:
        check_job_access(self.kind, self.get(job_id), RUN)
        row = self.store.request_cancel(job_id)
        if row is None:
            self.store.get(job_id, self.kind)  # raises NOT_FOUND
        active = self._leases.get(job_id)
        if active is not None:
            active.halt("cancelled")  # ours: no need to wait for the heartbeat
        elif row.state == CANCELLED:
            self._ended(job_id)
        return snapshot(row, self._codec)

    def reopen(
        self, job_id: str, message: str, details: dict[str, Any] | None = None
    ) -> tuple[Job, bool]:
        """Queues a failed or cancelled job again; (job, whether it was reopened)."""
        check_job_access(self.kind, self.get(job_id), RUN)
        row, reopened = self.store.reopen(job_id, message, details)
        if row is None:
            self.store.get(job_id, self.kind)  # raises NOT_FOUND
        if reopened:
            log.info("%s job %s queued again: %s", self.kind, job_id, message)
            with self._wake:
                self._wake.notify()
        return snapshot(row, self._codec), reopened

    def watch(
        self,
        job_id: str,
        after_sequence: int = 0,
        alive: Callable[[], bool] = lambda: True,
        poll_s: float = 0.25,
    ) -> Iterator[tuple[JobEvent, Job]]:
        """Yields (event, job) for every event after `after_sequence` until the end.

        Polls the events table, so a watcher on any replica sees every event.
        """
        self.get(job_id)  # NOT_FOUND / PERMISSION_DENIED before the first event
        index = max(0, after_sequence)
        first = True
        while True:
            row, events = self.store.job_and_events(job_id, index)
            if row is None:
                if first:
                    self.store.get(job_id, self.kind)  # raises NOT_FOUND
                return  # pruned while watched
            first = False
            job = snapshot(row, self._codec)
            for event in events:
                yield event_of(event), job
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
        with self._lifecycle:  # a start under way finishes first
            pass
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + wait_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for active in self._leases.held().values():
            active.halt("shutdown")
        deadline = time.monotonic() + stop_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._leases.stop_heartbeat()

    def abandon(self) -> None:
        """Stops this replica without telling the database, as a kill would.

        Running jobs stay RUNNING under this worker's lease until it expires
        (or this worker id starts again). For tests and for fencing a replica.
        """
        self._stopping.set()
        with self._lifecycle:  # a start under way finishes first
            pass
        self._leases.halted.set()
        for active in self._leases.held().values():
            active.halt("lost")
        with self._wake:
            self._wake.notify_all()
        for t in self._threads:
            t.join(10.0)
        self._leases.stop_heartbeat()

    def running_ids(self) -> list[str]:
        """Ids of the jobs this replica is running now."""
        return list(self._leases.held())

    def beat(self) -> None:
        """One heartbeat (see Leases.beat); for engines built without a
        heartbeat thread, e.g. in tests."""
        self._leases.beat()

    # --- JobContext backend -------------------------------------------------------
    def _ctx_stopped(self, active: Held) -> bool:
        return active.stop.is_set()

    def _ctx_cancel_requested(self, active: Held) -> bool:
        return active.cancelled

    def _ctx_report(
        self, active: Held, job: Job, update: Update, details: dict | None
    ) -> None:
        if active.lost:
            return  # taken over (or abandoned): the new owner reports now
        if not self.store.report(job.id, active.fence, update, details):
            self._leases.lose(job.id, active)

    def _ctx_save(self, active: Held, job: Job, details: dict[str, Any]) -> None:
        if active.lost or not self.store.save_details(job.id, active.fence, details):
            self._leases.lose(job.id, active)
            raise Cancelled(f"{self.kind} job {job.id} was taken over elsewhere")

    def _ctx_resumed(self, active: Held, job: Job, step: int) -> None:
        if not self.store.set_resumed_from_step(job.id, active.fence, step):
            self._leases.lose(job.id, active)

    # --- internals ----------------------------------------------------------------
    def _work(self) -> None:
        while not self._stopping.is_set():
            claimed = self._next_claim()
            if claimed is None:
                continue  # stopping
            row, how = claimed
            try:
                self._run(row, how)
            except Exception:  # noqa: BLE001
                log.exception("%s job %s: recording its end failed", self.kind, row.id)

    def _next_claim(self) -> tuple[Any, str] | None:
        """Waits for a job this worker can claim (None when stopping).

        Only one idle worker of a replica polls the database at a time (the
        others wait for it to claim a job and hand the polling on), so a
        replica with many workers, such as the gateway's rollout queue,
        costs one claim per `poll_s`, not one per worker.
        """
        with self._claiming:
            while not self._stopping.is_set():
                try:
                    claimed = self.store.claim(self.worker_id, self.lease_s)
                except Exception:  # noqa: BLE001 - a database hiccup must not kill a worker
                    log.exception("%s: claiming a job failed; retrying", self.kind)
                    self._stopping.wait(max(self._poll_s, 1.0))
                    continue
                if claimed is not None:
                    return claimed
                with self._wake:
                    if not self._stopping.is_set():
                        self._wake.wait(self._poll_s)
        return None

    def _run(self, row: Any, how: str) -> None:
        active = self._leases.hold(row.id, Fence(self.worker_id, row.attempt))
        if self._leases.halted.is_set():
            active.halt("lost")
        elif self._stopping.is_set():
            active.halt("shutdown")
        job = snapshot(row, self._codec)
        previous = span_context_of(row.run_context)
        token = otel_context.attach(context_from_traceparent(row.trace_context))
        try:
            with tracer.start_as_current_span(
                f"{self.kind}.job",
                attributes={
                    "lorafleet.job_id": job.id,
                    "lorafleet.attempt": job.attempt,
                    "lorafleet.worker_id": self.worker_id,
                },
                links=[trace.Link(previous, {"lorafleet.relation": "previous_attempt"})]
                if previous
                else [],
            ):
                log.info("%s job %s %s", self.kind, job.id, how)
                self.store.set_run_context(job.id, active.fence, current_traceparent())
                ended = self._attempt(job, active)
        finally:
            otel_context.detach(token)
            self._leases.release(job.id)
        if ended:
            self._ended(job.id)

    def _attempt(self, job: Job, active: Held) -> bool:
        """Runs one attempt and records its end; True when the job ended."""
        started = time.monotonic()
        try:
            if active.stop.is_set():
                raise Cancelled("stopped before it started")
            with acting_as(owner_of(job)):
                result = self._runner(JobContext(self, job, active), job.spec)
            # Fenced: a replica that lost the job records nothing.
            ended = not active.lost and self.store.finish(
                job.id,
                active.fence,
                SUCCEEDED,
                "succeeded",
                result=self._codec.encode_result(result),
            )
            outcome = "succeeded" if ended else "lost"
        except BaseException as exc:  # noqa: BLE001 - a job must never kill a worker
            ended, outcome = self._failed(job, active, exc)
        record(
            job_duration,
            time.monotonic() - started,
            {"lorafleet.job.kind": self.kind, "lorafleet.job.outcome": outcome},
        )
        return ended

    def _failed(self, job: Job, active: Held, exc: BaseException) -> tuple[bool, str]:
        """Records how a run ended early: (whether the job reached its end,
        the attempt's outcome)."""
        store, fence = self.store, active.fence
        if active.lost:
            log.warning(
                "%s job %s: %s no longer holds it; leaving it to its new owner",
                self.kind,
                job.id,
                self.worker_id,
            )
            return False, "lost"
        stopped = isinstance(exc, Cancelled) or (
            active.stop.is_set() and not isinstance(exc, LorafleetError)
        )
        if stopped and (active.cancelled or not active.shutdown):
            log.info("%s job %s cancelled", self.kind, job.id)
            return store.finish(job.id, fence, CANCELLED, "cancelled"), "cancelled"
        if stopped:
            log.info("%s job %s put back in the queue (shutdown)", self.kind, job.id)
            store.requeue(
                job.id,
                fence,
                f"requeued: {self.worker_id} is shutting down; the job resumes "
                "where it was",
            )
            return False, "requeued"
        code, message = failure(self.kind, job.id, exc, job.trace_id)
        ended = store.finish(job.id, fence, FAILED, message, error=(code, message))
        return ended, "failed"

    def _ended(self, job_id: str) -> None:
        if self._on_end is not None:
            try:
                self._on_end(job_id)
            except Exception:  # noqa: BLE001
                log.exception(
                    "%s job %s: end-of-job clean-up failed", self.kind, job_id
                )
        try:
            self.store.prune(self._history, self._retention_s)
        except Exception:  # noqa: BLE001
            log.exception("%s: pruning finished jobs failed", self.kind)
