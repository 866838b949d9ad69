"""What every job engine shares: states, events, the job record, failure codes.

Every long operation (train, merge, validate, workflow) is a job: submission
returns at once with an id, a worker runs it, and watchers receive each
progress event in order until the job ends. The in-memory engine and the
durable (database) engine hold the same `Job` record and give runners the
same `JobContext`, so domain code never knows which one runs it.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from services.common.auth.caller import (
    Caller,
    caller_or_none,
    current_caller,
    require,
)
from services.common.errors import (
    AlreadyExists,
    LorafleetError,
    ResourceExhausted,
)

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Update:
    """Fields of a job (and of the event recording the change) to set."""

    stage: str | None = None
    progress: float | None = None
    message: str | None = None
    metrics: dict[str, float] | None = None
    step: int = 0
    total_steps: int = 0


@dataclass
class Job:
    """An engine's record of one job; `spec` and `result` are domain objects."""

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
    # Trace id and W3C traceparent of the request that submitted the job: the
    # job's own span is its child, in whichever process or attempt runs it.
    trace_id: str = ""
    trace_context: str = ""
    # Facts the runner recorded while running (sub-job ids, step outcomes);
    # the durable engine persists them, so a resumed attempt continues there.
    details: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    # Runs started so far (a resumed job runs again with attempt + 1).
    attempt: int = 0
    worker_id: str = ""
    resumed_from_step: int = 0
    # The caller's idempotency key: a retried Start with it returns this job.
    request_id: str = ""
    # The project the job belongs to, and who submitted it (their Caller's
    # claims): the job runs as them, in whichever replica, after restarts.
    project: str = "default"
    owner: dict[str, Any] = field(default_factory=dict)
    events: list[JobEvent] = field(default_factory=list)
    cancel_requested: threading.Event = field(default_factory=threading.Event)


# Called with the job's JobContext and its spec; returns the job's result.
Runner = Callable[[Any, Any], Any]


class JobEngine(Protocol):
    """What servicers and domain code use of a job engine, whichever it is."""

    kind: str

    def submit(
        self,
        spec: Any,
        *,
        priority: int = 0,
        request_id: str = "",
        digest: str = "",
        details: dict[str, Any] | None = None,
    ) -> Job: ...

    def find(self, request_id: str, digest: str = "") -> Job | None: ...

    def get(self, job_id: str) -> Job: ...

    def list(
        self, state: JobState | None, page_size: int, page_token: str
    ) -> tuple[list[Job], str]: ...

    def cancel(self, job_id: str) -> Job: ...

    def watch(
        self,
        job_id: str,
        after_sequence: int = 0,
        alive: Callable[[], bool] = ...,
    ) -> Iterator[tuple[JobEvent, Job]]: ...

    def shutdown(self, wait_s: float = 0.0) -> None: ...


def queue_full(kind: str, waiting: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"the {kind} queue is full ({waiting} jobs waiting); retry later, cancel "
        "queued jobs, or raise LORAFLEET_JOB_QUEUE_SIZE"
    )


def shutting_down(kind: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"the {kind} service is shutting down; retry against another replica"
    )


def request_reused(request_id: str, job_id: str) -> AlreadyExists:
    return AlreadyExists(
        f"request_id {request_id[:80]!r} was used for a different request (job "
        f"{job_id}); use a new request_id for a new request",
        field="request_id",
    )


def failure(
    kind: str, job_id: str, exc: BaseException, trace_id: str
) -> tuple[str, str]:
    """The (status code, message) a job that raised `exc` fails with.

    Domain errors keep their code and message. Anything else is a bug or a
    crash: its text (which may hold paths, SQL or library internals) goes to
    the service's log, and the caller gets a message saying where to look.
    """
    if isinstance(exc, LorafleetError):
        log.warning("%s job %s failed: %s %s", kind, job_id, exc.code, exc.message)
        return exc.code, exc.message
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        log.warning("%s job %s: the disk is full: %s", kind, job_id, exc)
        return "RESOURCE_EXHAUSTED", (
            f"{kind} job {job_id} ran out of disk space ({exc.strerror}); free "
            "space under the data directory (LORAFLEET_DATA_DIR) or raise its "
            "quota, then start the job again"
        )
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        log.warning("%s job %s ran out of memory: %s", kind, job_id, exc)
        return "RESOURCE_EXHAUSTED", (
            f"ran out of memory: {str(exc)[:300]}. Use a smaller batch_size or "
            "max_seq_length, enable gradient checkpointing, or use QLoRA"
        )
    log.error("%s job %s crashed", kind, job_id, exc_info=exc)
    return "INTERNAL", (
        f"internal error ({type(exc).__name__}) in {kind} job {job_id}; the "
        f"{kind} service's log has the details under trace id {trace_id or 'n/a'}"
    )


def owner_of(job: Job) -> Caller | None:
    """Whom a job acts as while it runs (None: jobs from before auth)."""
    return Caller.from_claims(job.owner) if job.owner else None


def created_by(job: Job) -> str:
    return str(job.owner.get("sub", "")) if job.owner else ""


def check_job_access(kind: str, job: Job, permission: str) -> Job:
    """PERMISSION_DENIED unless the caller holds `permission` in the job's project."""
    require(permission, job.project, f"{kind} job {job.id}")
    return job


def submitter() -> tuple[str, dict[str, Any]]:
    """The project and owner claims a job submitted now gets."""
    caller = current_caller()
    return caller.project, (caller.to_claims() if caller_or_none() else {})
