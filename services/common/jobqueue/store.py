"""A job table's units of work: submit, claim, lease, events, cancel, finish.

Every method is one short transaction. Writes by the replica running a job
carry a fence (worker id + attempt): once another replica has reclaimed the
job, the old runner's writes match no row and are dropped instead of
overwriting the new attempt's state.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.database import Transactions, lock_key, utcnow
from services.common.errors import AlreadyExists, NotFound, ResourceExhausted
from services.common.jobqueue.tables import JobTables, json_numbers
from services.common.jobs.model import Update

log = logging.getLogger(__name__)

QUEUED, RUNNING = "QUEUED", "RUNNING"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class Fence:
    """Who may write a running job's state: its claimant, for one attempt."""

    worker_id: str
    attempt: int


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


class JobStore:
    """Reads and writes one service's jobs; shared by a replica's threads."""

    def __init__(self, engine: Engine, tables: JobTables, *, attempts: int = 8):
        self.engine = engine
        self.tables = tables
        self.kind = tables.prefix
        self.db = Transactions(
            engine, what=f"the {tables.prefix} job database", attempts=attempts
        )
        self.postgres = self.db.postgres

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
                raise ResourceExhausted(
                    f"the {kind} queue is full ({waiting} jobs waiting); retry "
                    "later, cancel queued jobs, or raise LORAFLEET_JOB_QUEUE_SIZE"
                )
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
            raise AlreadyExists(
                f"request_id {request_id[:80]!r} was used for a different request "
                f"(job {row.id}); use a new request_id for a new request",
                field="request_id",
            )
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

    def list(self, state: str | None, offset: int, limit: int) -> list[Any]:
        """Newest first; `limit` rows from `offset`."""
        Job = self.tables.Job
        query = select(Job).order_by(Job.create_time.desc(), Job.id.desc())
        if state is not None:
            query = query.where(Job.state == state)
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

    # --- claims and leases --------------------------------------------------------
    def claim(self, worker_id: str, lease_s: float) -> tuple[Any, str] | None:
        """Takes the next job to run: an abandoned one first, else the best queued.

        Abandoned = RUNNING with an expired lease (its replica died). Queued
        jobs go highest priority first, then oldest. PostgreSQL locks the
        chosen row with SKIP LOCKED, so concurrent claimants take different
        jobs; SQLite's BEGIN IMMEDIATE makes the claim the only writer.
        Returns the row and what happened to it (for the log).
        """
        Job = self.tables.Job
        if not self.db.read(self._claimable):
            return None  # idle replicas poll without taking the write lock

        def work(session: Session) -> tuple[Any, str] | None:
            now = utcnow()
            while True:
                row = self._first(
                    session, Job.state == RUNNING, Job.lease_expires < now
                )
                if row is None:
                    break
                previous = row.worker_id
                if row.cancel_requested:
                    self._finish(
                        session,
                        row,
                        CANCELLED,
                        f"cancelled (its worker {previous} had stopped)",
                        now,
                    )
                    continue
                how = (
                    f"resumed on {worker_id} (attempt {row.attempt + 1}): the "
                    f"lease of {previous} expired"
                )
                return self._take(session, row, worker_id, lease_s, now, how), how
            row = self._first(session, Job.state == QUEUED)
            if row is None:
                return None
            how = (
                f"started on {worker_id}"
                if row.attempt == 0
                else f"resumed on {worker_id} (attempt {row.attempt + 1})"
            )
            return self._take(session, row, worker_id, lease_s, now, how), how

        return self.db.write(work)

    def expire_leases_of(self, worker_id: str) -> list[str]:
        """Marks the jobs a previous run of `worker_id` left RUNNING as abandoned,
        so the next claim (on any replica) resumes them at once; their ids."""
        Job = self.tables.Job

        def work(session: Session) -> list[str]:
            rows = session.scalars(
                select(Job)
                .where(Job.state == RUNNING, Job.worker_id == worker_id)
                .with_for_update()
            ).all()
            now = utcnow()
            for row in rows:
                row.lease_expires = now - dt.timedelta(seconds=1)
                self._event(
                    session,
                    row,
                    Update(
                        message=f"{worker_id} restarted; the job resumes where "
                        "its last attempt was"
                    ),
                    now,
                )
            return [row.id for row in rows]

        return self.db.write(work)

    def renew(self, fences: dict[str, Fence], lease_s: float) -> set[str]:
        """Extends the leases of jobs still held; returns the ids no longer held."""
        if not fences:
            return set()

        def work(session: Session) -> set[str]:
            now = utcnow()
            lost = set()
            for job_id, fence in fences.items():
                row = self._fenced(session, job_id, fence)
                if row is None:
                    lost.add(job_id)
                else:
                    row.lease_expires = now + dt.timedelta(seconds=lease_s)
            return lost

        return self.db.write(work)

    def cancel_flags(self, job_ids: list[str]) -> set[str]:
        """Ids among `job_ids` whose cancellation was requested."""
        if not job_ids:
            return set()
        Job = self.tables.Job
        return self.db.read(
            lambda s: set(
                s.scalars(
                    select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested)
                )
            )
        )

    # --- changes by the running replica -------------------------------------------
    def report(
        self,
        job_id: str,
        fence: Fence,
        update: Update,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """Records a progress event (and new details, in the same transaction);
        False when the job is no longer ours."""

        def work(session: Session, row: Any) -> None:
            if details is not None:
                row.details = json_numbers(details)
            self._event(session, row, update, utcnow())

        return self._fenced_write(job_id, fence, work)

    def save_details(self, job_id: str, fence: Fence, details: dict[str, Any]) -> bool:
        def work(session: Session, row: Any) -> None:
            row.details = json_numbers(details)

        return self._fenced_write(job_id, fence, work)

    def set_resumed_from_step(self, job_id: str, fence: Fence, step: int) -> bool:
        def work(session: Session, row: Any) -> None:
            row.resumed_from_step = step

        return self._fenced_write(job_id, fence, work)

    def set_run_context(self, job_id: str, fence: Fence, traceparent: str) -> bool:
        def work(session: Session, row: Any) -> None:
            row.run_context = traceparent

        return self._fenced_write(job_id, fence, work)

    def finish(
        self,
        job_id: str,
        fence: Fence | None,
        state: str,
        message: str,
        *,
        result: dict[str, Any] | None = None,
        error: tuple[str, str] = ("", ""),
    ) -> bool:
        """Ends the job; False when (fenced) it is no longer ours or already ended."""

        def work(session: Session) -> bool:
            if fence is None:
                row = session.get(self.tables.Job, job_id, with_for_update=True)
                if row is None or row.state in TERMINAL:
                    return False
            else:
                row = self._fenced(session, job_id, fence)
                if row is None:
                    return False
            row.result = json_numbers(result) if result is not None else None
            row.error_code, row.error_message = error
            self._finish(session, row, state, message, utcnow())
            return True

        return self.db.write(work)

    def requeue(self, job_id: str, fence: Fence, message: str) -> bool:
        """Puts a job this replica stops running (shutdown) back in the queue."""

        def work(session: Session, row: Any) -> None:
            row.state = QUEUED
            row.lease_expires = None
            self._event(session, row, Update(stage="queued", message=message), utcnow())

        return self._fenced_write(job_id, fence, work)

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

    # --- helpers ------------------------------------------------------------------
    def _claimable(self, session: Session) -> bool:
        Job = self.tables.Job
        waiting = or_(
            Job.state == QUEUED,
            (Job.state == RUNNING) & (Job.lease_expires < utcnow()),
        )
        return session.scalar(select(Job.id).where(waiting).limit(1)) is not None

    def _first(self, session: Session, *where: Any) -> Any | None:
        Job = self.tables.Job
        return session.scalars(
            select(Job)
            .where(*where)
            .order_by(Job.priority.desc(), Job.create_time.asc(), Job.id.asc())
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()

    def _fenced(self, session: Session, job_id: str, fence: Fence) -> Any | None:
        """The job row, locked, if `fence` still holds it running."""
        row = session.get(self.tables.Job, job_id, with_for_update=True)
        if (
            row is None
            or row.state != RUNNING
            or row.worker_id != fence.worker_id
            or row.attempt != fence.attempt
        ):
            return None
        return row

    def _fenced_write(self, job_id: str, fence: Fence, change) -> bool:
        """Applies `change(session, row)` if `fence` still holds the job."""

        def work(session: Session) -> bool:
            row = self._fenced(session, job_id, fence)
            if row is None:
                return False
            change(session, row)
            return True

        return self.db.write(work)

    def _take(
        self,
        session: Session,
        row: Any,
        worker_id: str,
        lease_s: float,
        now: dt.datetime,
        message: str,
    ) -> Any:
        row.state = RUNNING
        row.attempt += 1
        row.worker_id = worker_id
        row.lease_expires = now + dt.timedelta(seconds=lease_s)
        row.start_time = row.start_time or now
        self._event(session, row, Update(stage="starting", message=message), now)
        return row

    def _finish(
        self, session: Session, row: Any, state: str, message: str, now: dt.datetime
    ) -> None:
        row.state = state
        row.end_time = now
        row.lease_expires = None
        stage = "done" if state == SUCCEEDED else None
        progress = 1.0 if state == SUCCEEDED else None
        self._event(
            session, row, Update(stage=stage, progress=progress, message=message), now
        )

    def _event(self, session: Session, row: Any, update: Update, now: dt.datetime):
        """Applies `update` to the (locked) job row and appends the matching event."""
        if update.stage is not None:
            row.stage = update.stage
        if update.progress is not None:
            row.progress = min(1.0, max(0.0, update.progress))
        if update.message is not None:
            row.message = update.message
        row.update_time = now
        row.last_sequence += 1
        session.add(
            self.tables.Event(
                job_id=row.id,
                sequence=row.last_sequence,
                state=row.state,
                stage=row.stage,
                progress=row.progress,
                message=row.message,
                metrics=json_numbers(
                    {k: float(v) for k, v in (update.metrics or {}).items()}
                ),
                time=now,
                step=update.step,
                total_steps=update.total_steps,
            )
        )
