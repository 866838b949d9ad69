"""A job table's units of work: submit, read, cancel, reopen, prune (the running
replica's claims and writes are in `claims`).

Every method is one short transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.database import lock_key, utcnow
from services.common.errors import NotFound
from services.common.jobqueue.base import (  # noqa: F401 (re-exported)
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Fence,
)
from services.common.jobqueue.claims import Claims
from services.common.jobqueue.tables import json_numbers
from services.common.jobs.model import Update, queue_full, request_reused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewJob:
    """A row to insert by `JobStore.submit`."""

    id: str
    spec: dict[str, Any]
    priority: int = 0
    trace_id: str = ""
    trace_context: str = ""
    request_id: str = ""
    request_digest: str = ""
    details: dict[str, Any] | None = None
    project: str = "default"
    owner: dict[str, Any] | None = None


class JobStore(Claims):
    """Reads and writes one service's jobs; shared by a replica's threads."""

    # --- submission and queries ---------------------------------------------------
    def submit(self, new: NewJob, *, queue_size: int, kind: str) -> tuple[Any, bool]:
        """Inserts a queued job; returns (row, created).

        With a request id already used, the job it created is returned instead
        (ALREADY_EXISTS when its request differed). RESOURCE_EXHAUSTED when
        the queue is full.
        """
        Job = self.tables.Job

        def work(session: Session) -> tuple[Any, bool]:
            # Replicas count and insert one at a time, so the bound holds.
            lock_key(session, f"{self.kind}-queue-submit")
            if new.request_id:
                existing = self._by_request(session, new.request_id, new.request_digest)
                if existing is not None:
                    return existing, False
            waiting = session.scalar(
                select(func.count()).select_from(Job).where(Job.state == QUEUED)
            )
            if waiting >= queue_size:
                raise queue_full(kind, waiting)
            now = utcnow()
            row = Job(
                id=new.id,
                state=QUEUED,
                priority=new.priority,
                spec=json_numbers(new.spec),
                stage="queued",
                progress=0.0,
                message="queued",
                trace_id=new.trace_id,
                trace_context=new.trace_context,
                run_context="",
                create_time=now,
                update_time=now,
                attempt=0,
                worker_id="",
                cancel_requested=False,
                resumed_from_step=0,
                last_sequence=0,
                error_code="",
                error_message="",
                request_id=new.request_id or None,
                request_digest=new.request_digest,
                details=json_numbers(new.details or {}),
                project=new.project,
                owner=new.owner or None,
            )
            session.add(row)
            session.flush()  # the job row before its first event (foreign key)
            self._event(session, row, Update(message="queued"), now)
            return row, True

        try:
            return self.db.write(work)
        except IntegrityError:
            # Another replica inserted the same request id first: return its job.
            found = self.find(new.request_id, new.request_digest)
            if found is None:
                raise
            return found, False

    def find(self, request_id: str, digest: str = "") -> Any | None:
        """The job created with `request_id`, or None."""
        if not request_id:
            return None
        return self.db.read(lambda s: self._by_request(s, request_id, digest))

    def _by_request(self, session: Session, request_id: str, digest: str) -> Any:
        Job = self.tables.Job
        row = session.scalars(select(Job).where(Job.request_id == request_id)).first()
        if row is not None and digest and row.request_digest not in ("", digest):
            raise request_reused(request_id, row.id)
        return row

    def get(self, job_id: str, kind: str = "") -> Any:
        row = self.db.read(lambda s: s.get(self.tables.Job, job_id))
        if row is None:
            raise NotFound(
                f"no {kind or self.kind} job has id {job_id[:80]!r}; list jobs to "
                "see the known ids (finished jobs are kept for "
                "LORAFLEET_JOB_RETENTION_S, at most LORAFLEET_JOB_HISTORY of them)",
                field="job_id",
            )
        return row

    def list(
        self,
        state: str | None,
        offset: int,
        limit: int,
        projects: set[str] | None = None,
    ) -> list[Any]:
        """Newest first; `limit` rows from `offset`; only `projects` when given."""
        Job = self.tables.Job
        query = select(Job).order_by(Job.create_time.desc(), Job.id.desc())
        if state is not None:
            query = query.where(Job.state == state)
        if projects is not None:
            query = query.where(Job.project.in_(sorted(projects)))
        return self.db.read(
            lambda s: list(s.scalars(query.offset(offset).limit(limit)))
        )

    def job_and_events(
        self, job_id: str, after: int, limit: int = 500
    ) -> tuple[Any | None, list[Any]]:
        """The job, then its events after sequence `after` (read in that order,
        so a terminal job comes with every event up to its last)."""
        Job, Event = self.tables.Job, self.tables.Event

        def work(session: Session):
            row = session.get(Job, job_id)
            if row is None:
                return None, []
            events = session.scalars(
                select(Event)
                .where(Event.job_id == job_id, Event.sequence > after)
                .order_by(Event.sequence)
                .limit(limit)
            )
            return row, list(events)

        return self.db.read(work)

    def count(self, state: str) -> int:
        Job = self.tables.Job
        return self.db.read(
            lambda s: s.scalar(
                select(func.count()).select_from(Job).where(Job.state == state)
            )
        )

    # --- cancellation, resumption and retention ----------------------------------
    def request_cancel(self, job_id: str) -> Any | None:
        """Cancels a queued job at once, flags a running one; None if unknown."""

        def work(session: Session) -> Any | None:
            row = session.get(self.tables.Job, job_id, with_for_update=True)
            if row is None or row.state in TERMINAL:
                return row
            now = utcnow()
            row.cancel_requested = True
            if row.state == QUEUED:
                message = "cancelled before it started"
                self._finish(session, row, CANCELLED, message, now)
            else:
                self._event(session, row, Update(message="cancellation requested"), now)
            return row

        return self.db.write(work)

    def reopen(
        self, job_id: str, message: str, details: dict[str, Any] | None = None
    ) -> tuple[Any | None, bool]:
        """Queues a FAILED or CANCELLED job again (its details kept, or replaced
        by `details`); returns (row, reopened). None when the id is unknown."""

        def work(session: Session) -> tuple[Any | None, bool]:
            row = session.get(self.tables.Job, job_id, with_for_update=True)
            if row is None or row.state not in (FAILED, CANCELLED):
                return row, False
            row.state = QUEUED
            row.cancel_requested = False
            row.end_time = None
            row.lease_expires = None
            row.error_code, row.error_message = "", ""
            row.result = None
            if details is not None:
                row.details = json_numbers(details)
            self._event(session, row, Update(stage="queued", message=message), utcnow())
            return row, True

        return self.db.write(work)

    def prune(self, keep: int, retention_s: float) -> int:
        """Deletes finished jobs (and their events) that ended more than
        `retention_s` ago, and any beyond the newest `keep` (0: no count bound)."""
        Job, Event = self.tables.Job, self.tables.Event

        def work(session: Session) -> int:
            finished = Job.state.in_(TERMINAL)
            cutoff = utcnow() - dt.timedelta(seconds=retention_s)
            old = set(
                session.scalars(
                    select(Job.id).where(finished, Job.end_time < cutoff).limit(500)
                )
            )
            if keep > 0:
                old |= set(
                    session.scalars(
                        select(Job.id)
                        .where(finished)
                        .order_by(Job.end_time.desc(), Job.id.desc())
                        .offset(keep)
                        .limit(500)
                    )
                )
            if old:
                session.execute(delete(Event).where(Event.job_id.in_(old)))
                session.execute(delete(Job).where(Job.id.in_(old)))
            return len(old)

        return self.db.write(work)
