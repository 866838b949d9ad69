"""In-process job engine: bounded queue, worker threads, progress events, cancel.

Every long operation (train, merge, validate, workflow) is a job: submission
returns at once with an id, a worker runs it, and watchers receive each progress
event in order until the job ends. Domain runners receive a `JobContext` and
never see gRPC.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from services.common.errors import (
    Cancelled,
    LorafleetError,
    NotFound,
    ResourceExhausted,
)
from services.common.paging import paginate
from services.common.telemetry import current_trace_id

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lorafleet.jobs")


class JobState(Enum):
    QUEUED = 1
    RUNNING = 2
    SUCCEEDED = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobEvent:
    sequence: int
    state: JobState
    stage: str
    progress: float
    message: str
    metrics: dict[str, float]
    time: float
    step: int = 0
    total_steps: int = 0


@dataclass
class Job:
    """The engine's record of one job; `spec` and `result` are domain objects."""

    id: str
    spec: Any
    state: JobState = JobState.QUEUED
    stage: str = "queued"
    progress: float = 0.0
    message: str = "queued"
    create_time: float = field(default_factory=time.time)
    start_time: float | None = None
    end_time: float | None = None
    error_code: str = ""
    error_message: str = ""
    result: Any = None
    trace_id: str = ""
    # Free-form facts the runner exposes while running (e.g. sub-job ids).
    details: dict[str, Any] = field(default_factory=dict)
    events: list[JobEvent] = field(default_factory=list)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    _context: Any = None


class JobContext:
    """What a runner may do: report progress, check for cancellation."""

    def __init__(self, engine: JobEngine, job: Job) -> None:
        self._engine = engine
        self.job = job

    @property
    def cancelled(self) -> bool:
        return self.job.cancel_requested.is_set()

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
        self._engine._emit(
            self.job,
            stage=stage,
            progress=progress,
            message=message,
            metrics=metrics or {},
            step=step,
            total_steps=total_steps,
        )

    def set_detail(self, key: str, value: Any) -> None:
        with self._engine._cond:
            self.job.details[key] = value


Runner = Callable[[JobContext, Any], Any]


class JobEngine:
    """Runs jobs of one kind on `workers` threads with at most `queue_size` waiting."""

    def __init__(
        self,
        kind: str,
        runner: Runner,
        *,
        workers: int = 1,
        queue_size: int = 16,
        history: int = 256,
    ) -> None:
        self.kind = kind
        self._runner = runner
        self._queue_size = queue_size
        self._history = history
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._cond = threading.Condition()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0
        self._seq = itertools.count()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{kind}-worker-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    # --- submission and queries -------------------------------------------------
    def submit(self, spec: Any) -> Job:
        with self._cond:
            if self._stopping:
                raise ResourceExhausted(
                    f"the {self.kind} service is shutting down; retry "
                    "against another replica"
                )
            if self._waiting >= self._queue_size:
                raise ResourceExhausted(
                    f"the {self.kind} queue is full ({self._waiting} jobs waiting); "
                    "retry "
                    "later, cancel queued jobs, or raise LORAFLEET_JOB_QUEUE_SIZE"
                )
            job = Job(
                id=f"{self.kind}-{uuid.uuid4().hex[:16]}",
                spec=spec,
                trace_id=current_trace_id(),
                _context=otel_context.get_current(),
            )
            self._jobs[job.id] = job
            self._waiting += 1
            self._record(job, message="queued")
            self._evict_finished()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(
                f"no {self.kind} job has id {job_id!r}; list jobs to see the "
                "known ids (finished jobs are kept for a bounded time)",
                field="job_id",
            )
        return job

    def list(
        self, state: JobState | None, page_size: int, page_token: str
    ) -> tuple[list[Job], str]:
        with self._cond:
            jobs = [
                j
                for j in reversed(self._jobs.values())
                if state is None or j.state == state
            ]
        scope = f"{self.kind}:{state.name if state else '*'}"
        return paginate(jobs, page_size, page_token, scope)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            if job.state.terminal:
                return job
            job.cancel_requested.set()
            if job.state == JobState.QUEUED:
                self._waiting -= 1
                self._finish(
                    job, JobState.CANCELLED, message="cancelled before it started"
                )
            else:
                self._record(job, message="cancellation requested")
        return job

    def watch(
        self,
        job_id: str,
        after_sequence: int = 0,
        alive: Callable[[], bool] = lambda: True,
        poll_s: float = 0.5,
    ) -> Iterator[tuple[JobEvent, Job]]:
        """Yields (event, job) for every event after `after_sequence` until the end."""
        job = self.get(job_id)
        index = max(0, after_sequence)
        while True:
            with self._cond:
                while len(job.events) <= index and not job.state.terminal:
                    if not alive():
                        return
                    self._cond.wait(poll_s)
                pending = job.events[index:]
                done = job.state.terminal and len(job.events) <= index + len(pending)
            for event in pending:
                yield event, job
            index += len(pending)
            if done:
                return

    def shutdown(self, wait_s: float = 0.0) -> None:
        """Stops taking jobs; running jobs are asked to cancel after `wait_s`."""
        with self._cond:
            self._stopping = True
        deadline = time.time() + wait_s
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(max(0.0, deadline - time.time()))
        with self._cond:
            for job in self._jobs.values():
                if not job.state.terminal:
                    job.cancel_requested.set()

    # --- internals ----------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._cond:
                if job.state != JobState.QUEUED:
                    continue  # cancelled while waiting
                self._waiting -= 1
                job.state = JobState.RUNNING
                job.start_time = time.time()
                self._record(job, stage="starting", message="started")
            token = otel_context.attach(job._context)
            try:
                with tracer.start_as_current_span(
                    f"{self.kind}.job", attributes={"lorafleet.job_id": job.id}
                ):
                    result = self._runner(JobContext(self, job), job.spec)
                with self._cond:
                    job.result = result
                    self._finish(
                        job, JobState.SUCCEEDED, message="succeeded", progress=1.0
                    )
            except BaseException as exc:  # noqa: BLE001 - a job must never kill a worker
                self._fail(job, exc)
            finally:
                otel_context.detach(token)

    def _fail(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) or (
            job.cancel_requested.is_set() and not isinstance(exc, LorafleetError)
        ):
            with self._cond:
                self._finish(job, JobState.CANCELLED, message="cancelled")
            return
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
        with self._cond:
            job.error_code, job.error_message = code, message
            self._finish(job, JobState.FAILED, message=message)

    def _finish(
        self, job: Job, state: JobState, *, message: str, progress: float | None = None
    ) -> None:
        job.state = state
        job.end_time = time.time()
        self._record(
            job,
            stage=job.stage if state != JobState.SUCCEEDED else "done",
            message=message,
            progress=progress,
        )

    def _emit(self, job: Job, **kw: Any) -> None:
        with self._cond:
            if job.state.terminal:
                return
            self._record(job, **kw)

    def _record(
        self,
        job: Job,
        *,
        stage: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        metrics: dict[str, float] | None = None,
        step: int = 0,
        total_steps: int = 0,
    ) -> None:
        """Updates the job and appends an event; caller holds the condition."""
        if stage is not None:
            job.stage = stage
        if progress is not None:
            job.progress = min(1.0, max(0.0, progress))
        if message is not None:
            job.message = message
        job.events.append(
            JobEvent(
                sequence=len(job.events) + 1,
                state=job.state,
                stage=job.stage,
                progress=job.progress,
                message=job.message,
                metrics=dict(metrics or {}),
                time=time.time(),
                step=step,
                total_steps=total_steps,
            )
        )
        self._cond.notify_all()

    def _evict_finished(self) -> None:
        finished = [j for j in self._jobs.values() if j.state.terminal]
        for job in finished[: max(0, len(finished) - self._history)]:
            del self._jobs[job.id]
