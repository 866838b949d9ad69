"""The in-memory job engine: bounded queue, worker threads, events, cancel.

For embedding and tests: jobs live as long as the process. Services run the
durable engine (`services.common.jobqueue`), which has the same surface and
gives runners the same JobContext.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from services.common.auth.caller import acting_as, current_caller
from services.common.auth.permissions import READ, RUN
from services.common.errors import (
    Cancelled,
    LorafleetError,
    NotFound,
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
    request_reused,
    shutting_down,
    submitter,
)
from services.common.paging import paginate
from services.common.telemetry import (
    context_from_traceparent,
    current_trace_id,
    current_traceparent,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lorafleet.jobs")


class MemoryJobEngine:
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
        self._by_request: dict[str, tuple[str, str]] = {}
        self._cond = threading.Condition()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{kind}-worker-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    # --- submission and queries -------------------------------------------------
    def submit(
        self,
        spec: Any,
        *,
        priority: int = 0,
        request_id: str = "",
        digest: str = "",
        details: dict[str, Any] | None = None,
    ) -> Job:
        with self._cond:
            if request_id:
                existing = self._find(request_id, digest)
                if existing is not None:
                    return existing
            if self._stopping:
                raise shutting_down(self.kind)
            if self._waiting >= self._queue_size:
                raise queue_full(self.kind, self._waiting)
            project, owner = submitter()
            job = Job(
                id=f"{self.kind}-{uuid.uuid4().hex[:16]}",
                project=project,
                owner=owner,
                spec=spec,
                priority=priority,
                request_id=request_id,
                details=dict(details or {}),
                trace_id=current_trace_id(),
                trace_context=current_traceparent(),
            )
            self._jobs[job.id] = job
            if request_id:
                self._by_request[request_id] = (job.id, digest)
            self._waiting += 1
            self._record(job, Update(message="queued"))
            self._evict_finished()
        self._queue.put(job)
        return job

    def find(self, request_id: str, digest: str = "") -> Job | None:
        with self._cond:
            return self._find(request_id, digest)

    def _find(self, request_id: str, digest: str) -> Job | None:
        found = self._by_request.get(request_id)
        if found is None or found[0] not in self._jobs:
            return None
        if digest and found[1] and digest != found[1]:
            raise request_reused(request_id, found[0])
        return self._jobs[found[0]]

    def get(self, job_id: str) -> Job:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(
                f"no {self.kind} job has id {job_id[:80]!r}; list jobs to see the "
                "known ids (this engine keeps finished jobs in memory only, up to "
                "its history size)",
                field="job_id",
            )
        return check_job_access(self.kind, job, READ)

    def list(
        self, state: JobState | None, page_size: int, page_token: str
    ) -> tuple[list[Job], str]:
        visible = current_caller().projects_with(READ)
        with self._cond:
            jobs = [
                j
                for j in reversed(self._jobs.values())
                if (state is None or j.state == state)
                and (visible is None or j.project in visible)
            ]
        scope = f"{self.kind}:{state.name if state else '*'}:{sorted(visible or ())}"
        return paginate(jobs, page_size, page_token, scope)

    def cancel(self, job_id: str) -> Job:
        job = check_job_access(self.kind, self.get(job_id), RUN)
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
                self._record(job, Update(message="cancellation requested"))
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
        deadline = time.monotonic() + wait_s
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            for job in self._jobs.values():
                if not job.state.terminal:
                    job.cancel_requested.set()

    # --- JobContext backend -------------------------------------------------------
    def _ctx_stopped(self, job: Job) -> bool:
        return job.cancel_requested.is_set()

    def _ctx_cancel_requested(self, job: Job) -> bool:
        return job.cancel_requested.is_set()

    def _ctx_report(
        self, job: Job, _job: Job, update: Update, details: dict | None
    ) -> None:
        with self._cond:
            if not job.state.terminal:
                self._record(job, update)

    def _ctx_save(self, job: Job, _job: Job, details: dict[str, Any]) -> None:
        pass  # the context already updated job.details, which is all there is

    def _ctx_resumed(self, job: Job, _job: Job, step: int) -> None:
        pass  # likewise job.resumed_from_step

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
                job.attempt += 1
                job.start_time = time.time()
                self._record(job, Update(stage="starting", message="started"))
            token = otel_context.attach(context_from_traceparent(job.trace_context))
            try:
                with (
                    tracer.start_as_current_span(
                        f"{self.kind}.job", attributes={"lorafleet.job_id": job.id}
                    ),
                    acting_as(owner_of(job)),
                ):
                    try:
                        result = self._runner(JobContext(self, job), job.spec)
                    except BaseException as exc:  # noqa: BLE001 - never kill a worker
                        self._fail(job, exc)
                        continue
                with self._cond:
                    job.result = result
                    self._finish(
                        job, JobState.SUCCEEDED, message="succeeded", progress=1.0
                    )
            finally:
                otel_context.detach(token)

    def _fail(self, job: Job, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) or (
            job.cancel_requested.is_set() and not isinstance(exc, LorafleetError)
        ):
            with self._cond:
                self._finish(job, JobState.CANCELLED, message="cancelled")
            return
        code, message = failure(self.kind, job.id, exc, job.trace_id)
        with self._cond:
            job.error_code, job.error_message = code, message
            self._finish(job, JobState.FAILED, message=message)

    def _finish(
        self, job: Job, state: JobState, *, message: str, progress: float | None = None
    ) -> None:
        job.state = state
        job.end_time = time.time()
        stage = job.stage if state != JobState.SUCCEEDED else "done"
        self._record(job, Update(stage=stage, message=message, progress=progress))

    def _record(self, job: Job, update: Update) -> None:
        """Updates the job and appends an event; caller holds the condition."""
        if update.stage is not None:
            job.stage = update.stage
        if update.progress is not None:
            job.progress = min(1.0, max(0.0, update.progress))
        if update.message is not None:
            job.message = update.message
        job.events.append(
            JobEvent(
                sequence=len(job.events) + 1,
                state=job.state,
                stage=job.stage,
                progress=job.progress,
                message=job.message,
                metrics=dict(update.metrics or {}),
                time=time.time(),
                step=update.step,
                total_steps=update.total_steps,
            )
        )
        self._cond.notify_all()

    def _evict_finished(self) -> None:
        finished = [j for j in self._jobs.values() if j.state.terminal]
        for job in finished[: max(0, len(finished) - self._history)]:
            del self._jobs[job.id]
            if job.request_id:
                self._by_request.pop(job.request_id, None)
