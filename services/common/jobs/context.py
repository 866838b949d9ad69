"""The one handle a job's runner gets, whichever engine runs the job."""

from __future__ import annotations

from typing import Any, Protocol

from services.common.errors import Cancelled
from services.common.jobs.model import Job, Update


class JobBackend(Protocol):
    """The engine side of a JobContext; `handle` is the engine's own record."""

    def _ctx_stopped(self, handle: Any) -> bool: ...

    def _ctx_cancel_requested(self, handle: Any) -> bool: ...

    def _ctx_report(
        self, handle: Any, job: Job, update: Update, details: dict | None
    ) -> None: ...

    def _ctx_save(self, handle: Any, job: Job, details: dict[str, Any]) -> None: ...

    def _ctx_resumed(self, handle: Any, job: Job, step: int) -> None: ...


class JobContext:
    """What a runner may do: report progress, record facts, check for a stop.

    `details` are the facts recorded so far, including those of an earlier
    attempt when the durable engine resumes a job: a runner reads them to
    continue where the last attempt was instead of starting over.
    """

    def __init__(self, backend: JobBackend, job: Job, handle: Any = None) -> None:
        self._backend = backend
        self._handle = handle if handle is not None else job
        self.job = job

    @property
    def cancelled(self) -> bool:
        """True once the job should stop: cancelled, shutting down or taken over."""
        return self._backend._ctx_stopped(self._handle)

    @property
    def cancel_requested(self) -> bool:
        """True when a user cancelled the job (not when the engine stops it to
        hand it over): the time to cancel the work it started elsewhere."""
        return self._backend._ctx_cancel_requested(self._handle)

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled(f"job {self.job.id} was cancelled")

    @property
    def details(self) -> dict[str, Any]:
        return self.job.details

    def report(
        self,
        *,
        stage: str | None = None,
        progress: float | None = None,
        message: str | None = None,
        metrics: dict[str, float] | None = None,
        step: int = 0,
        total_steps: int = 0,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Appends a progress event; `record` facts are saved with it, in the
        same write (see `record`)."""
        metrics = dict(metrics or {})
        update = Update(stage, progress, message, metrics, step, total_steps)
        details = None
        if record:
            self.job.details.update(record)
            details = dict(self.job.details)
        self._backend._ctx_report(self._handle, self.job, update, details)

    def record(self, **facts: Any) -> None:
        """Merges `facts` (JSON-able) into the job's details, durably where the
        engine is durable, before the runner goes on."""
        self.job.details.update(facts)
        self._backend._ctx_save(self._handle, self.job, dict(self.job.details))

    def set_resumed_from_step(self, step: int) -> None:
        """Records the checkpoint step this attempt resumed from."""
        self.job.resumed_from_step = step
        self._backend._ctx_resumed(self._handle, self.job, step)
