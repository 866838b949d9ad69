"""The job table's units of work: submit, claim, lease, events, cancel, finish.

Every method is one short transaction. Writes by the replica running a job
carry a fence (worker id + attempt): once another replica has reclaimed the
job, the old runner's writes match no row and are dropped instead of
overwriting the new attempt's state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.common.errors import NotFound, ResourceExhausted, Unavailable
from services.trainer.queue.models import (
    READ_ONLY,
    TrainJobEventRow,
    TrainJobRow,
    json_numbers,
    utcnow,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUED, RUNNING = "QUEUED", "RUNNING"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock.
_RETRY_SQLSTATES = {"40001", "40P01"}


@dataclass(frozen=True)
class Fence:
    """Who may write a running job's state: its claimant, for one attempt."""

    worker_id: str
    attempt: int


@dataclass(frozen=True)
class Update:
    """Fields of a job (and of the event recording the change) to set."""

    stage: str | None = None
    progress: float | None = None
    message: str | None = None
    metrics: dict[str, float] | None = None
    step: int = 0
    total_steps: int = 0


def _lock_key(scope: str) -> int:
    digest = hashlib.sha256(scope.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class JobStore:
    """Reads and writes trainer jobs; shared by a replica's threads."""

    def __init__(self, engine: Engine, *, attempts: int = 8) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._attempts = attempts
        self._writer = sessionmaker(engine, expire_on_commit=False)
        self._reader = sessionmaker(
            engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )

    # --- transactions -------------------------------------------------------------
    def read(self, work: Callable[[Session], T]) -> T:
        return self._run(self._reader, work)

    def write(self, work: Callable[[Session], T]) -> T:
        return self._run(self._writer, work)

    def _run(self, factory: sessionmaker, work: Callable[[Session], T]) -> T:
        for attempt in range(1, self._attempts + 1):
            try:
                with factory() as session, session.begin():
                    return work(session)
            except OperationalError as exc:
                sqlstate = getattr(exc.orig, "sqlstate", None)
                retry = (
                    exc.connection_invalidated
                    or sqlstate in _RETRY_SQLSTATES
                    or "database is locked" in str(exc.orig)
                )
                if not retry or attempt == self._attempts:
                    raise Unavailable(
                        "the trainer job database is busy or unreachable "
                        f"({exc.orig}); retry shortly"
                    ) from exc
                time.sleep(min(1.0, 0.05 * 2**attempt))
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == self._attempts:
                    raise
        raise AssertionError("unreachable")

    # --- submission and queries ---------------------------------------------------
    def submit(
        self,
        job_id: str,
        *,
        spec: dict[str, Any],
        priority: int,
        trace_id: str,
        queue_size: int,
        kind: str,
    ) -> TrainJobRow:
        """Inserts a queued job, or RESOURCE_EXHAUSTED when the queue is full."""

        def work(session: Session) -> TrainJobRow:
            if self.postgres:
                # Replicas count and insert one at a time, so the bound holds.
                session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": _lock_key(f"{kind}-queue-submit")},
                )
            waiting = session.scalar(
                select(func.count())
                .select_from(TrainJobRow)
                .where(TrainJobRow.state == QUEUED)
            )
            if waiting >= queue_size:
                raise ResourceExhausted(
                    f"the {kind} queue is full ({waiting} jobs waiting); retry "
                    "later, cancel queued jobs, or raise LORAFLEET_JOB_QUEUE_SIZE"
                )
            now = utcnow()
            row = TrainJobRow(
                id=job_id,
                state=QUEUED,
                priority=priority,
                spec=spec,
                stage="queued",
                progress=0.0,
                message="queued",
                trace_id=trace_id,
                create_time=now,
                update_time=now,
                attempt=0,
                worker_id="",
                cancel_requested=False,
                resumed_from_step=0,
                last_sequence=0,
                error_code="",
                error_message="",
            )
            session.add(row)
            session.flush()  # the job row before its first event (foreign key)
            _event(session, row, Update(message="queued"), now)
            return row

        return self.write(work)

    def get(self, job_id: str, kind: str = "train") -> TrainJobRow:
        row = self.read(lambda s: s.get(TrainJobRow, job_id))
        if row is None:
            raise NotFound(
                f"no {kind} job has id {job_id!r}; list jobs to see the known ids "
                "(finished jobs are kept up to LORAFLEET_JOB_HISTORY)",
                field="job_id",
            )
        return row

    def list(self, state: str | None, offset: int, limit: int) -> list[TrainJobRow]:
        """Newest first; `limit` rows from `offset`."""
        query = select(TrainJobRow).order_by(
            TrainJobRow.create_time.desc(), TrainJobRow.id.desc()
        )
        if state is not None:
            query = query.where(TrainJobRow.state == state)
        return self.read(lambda s: list(s.scalars(query.offset(offset).limit(limit))))

    def job_and_events(
        self, job_id: str, after: int, limit: int = 500
    ) -> tuple[TrainJobRow | None, list[TrainJobEventRow]]:
        """The job, then its events after sequence `after` (read in that order,
        so a terminal job comes with every event up to its last)."""

        def work(session: Session):
            row = session.get(TrainJobRow, job_id)
            if row is None:
                return None, []
            events = session.scalars(
                select(TrainJobEventRow)
                .where(
                    TrainJobEventRow.job_id == job_id,
                    TrainJobEventRow.sequence > after,
                )
                .order_by(TrainJobEventRow.sequence)
                .limit(limit)
            )
            return row, list(events)

        return self.read(work)

    def count(self, state: str) -> int:
        return self.read(
            lambda s: s.scalar(
                select(func.count())
                .select_from(TrainJobRow)
                .where(TrainJobRow.state == state)
            )
        )

    # --- claims and leases --------------------------------------------------------
    def claim(self, worker_id: str, lease_s: float) -> TrainJobRow | None:
        """Takes the next job to run: an abandoned one first, else the best queued.

        Abandoned = RUNNING with an expired lease (its replica died). Queued
        jobs go highest priority first, then oldest. PostgreSQL locks the
        chosen row with SKIP LOCKED, so concurrent claimants take different
        jobs; SQLite's BEGIN IMMEDIATE makes the claim the only writer.
        """

        if not self.read(_claimable):
            return None  # idle replicas poll without taking the write lock

        def work(session: Session) -> TrainJobRow | None:
            now = utcnow()
            while True:
                row = _first(
                    session,
                    TrainJobRow.state == RUNNING,
                    TrainJobRow.lease_expires < now,
                )
                if row is None:
                    break
                previous = row.worker_id
                if row.cancel_requested:
                    _finish(
                        session,
                        row,
                        CANCELLED,
                        f"cancelled (its trainer {previous} had stopped)",
                        now,
                    )
                    continue
                return _take(
                    session,
                    row,
                    worker_id,
                    lease_s,
                    now,
                    f"resumed on {worker_id} (attempt {row.attempt + 1}): the "
                    f"lease of {previous} expired",
                )
            row = _first(session, TrainJobRow.state == QUEUED)
            if row is None:
                return None
            message = (
                f"started on {worker_id}"
                if row.attempt == 0
                else f"resumed on {worker_id} (attempt {row.attempt + 1})"
            )
            return _take(session, row, worker_id, lease_s, now, message)

        return self.write(work)

    def expire_leases_of(self, worker_id: str) -> int:
        """Marks the jobs a previous run of `worker_id` left RUNNING as abandoned,
        so the next claim (on any replica) resumes them at once."""

        def work(session: Session) -> int:
            rows = session.scalars(
                select(TrainJobRow)
                .where(TrainJobRow.state == RUNNING, TrainJobRow.worker_id == worker_id)
                .with_for_update()
            ).all()
            now = utcnow()
            for row in rows:
                row.lease_expires = now - dt.timedelta(seconds=1)
                _event(
                    session,
                    row,
                    Update(
                        message=f"trainer {worker_id} restarted; the job resumes "
                        "from its last checkpoint"
                    ),
                    now,
                )
            return len(rows)

        return self.write(work)

    def renew(self, fences: dict[str, Fence], lease_s: float) -> set[str]:
        """Extends the leases of jobs still held; returns the ids no longer held."""
        if not fences:
            return set()

        def work(session: Session) -> set[str]:
            now = utcnow()
            lost = set()
            for job_id, fence in fences.items():
                row = _fenced(session, job_id, fence)
                if row is None:
                    lost.add(job_id)
                else:
                    row.lease_expires = now + dt.timedelta(seconds=lease_s)
            return lost

        return self.write(work)

    def cancel_flags(self, job_ids: list[str]) -> set[str]:
        """Ids among `job_ids` whose cancellation was requested."""
        if not job_ids:
            return set()
        return self.read(
            lambda s: set(
                s.scalars(
                    select(TrainJobRow.id).where(
                        TrainJobRow.id.in_(job_ids), TrainJobRow.cancel_requested
                    )
                )
            )
        )

    # --- changes by the running replica -------------------------------------------
    def report(self, job_id: str, fence: Fence, update: Update) -> bool:
        """Records a progress event; False when the job is no longer ours."""

        def work(session: Session) -> bool:
            row = _fenced(session, job_id, fence)
            if row is None:
                return False
            _event(session, row, update, utcnow())
            return True

        return self.write(work)

    def set_resumed_from_step(self, job_id: str, fence: Fence, step: int) -> bool:
        def work(session: Session) -> bool:
            row = _fenced(session, job_id, fence)
            if row is not None:
                row.resumed_from_step = step
            return row is not None

        return self.write(work)

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
                row = session.get(TrainJobRow, job_id, with_for_update=True)
                if row is None or row.state in TERMINAL:
                    return False
            else:
                row = _fenced(session, job_id, fence)
                if row is None:
                    return False
            row.result = json_numbers(result) if result is not None else None
            row.error_code, row.error_message = error
            _finish(session, row, state, message, utcnow())
            return True

        return self.write(work)

    def requeue(self, job_id: str, fence: Fence, message: str) -> bool:
        """Puts a job this replica stops running (shutdown) back in the queue."""

        def work(session: Session) -> bool:
            row = _fenced(session, job_id, fence)
            if row is None:
                return False
            row.state = QUEUED
            row.lease_expires = None
            _event(session, row, Update(stage="queued", message=message), utcnow())
            return True

        return self.write(work)

    # --- cancellation and retention ----------------------------------------------
    def request_cancel(self, job_id: str) -> TrainJobRow | None:
        """Cancels a queued job at once, flags a running one; None if unknown."""

        def work(session: Session) -> TrainJobRow | None:
            row = session.get(TrainJobRow, job_id, with_for_update=True)
            if row is None or row.state in TERMINAL:
                return row
            now = utcnow()
            row.cancel_requested = True
            if row.state == QUEUED:
                _finish(session, row, CANCELLED, "cancelled before it started", now)
            else:
                _event(session, row, Update(message="cancellation requested"), now)
            return row

        return self.write(work)

    def prune(self, keep: int) -> int:
        """Deletes finished jobs (and their events) beyond the newest `keep`."""

        def work(session: Session) -> int:
            old = list(
                session.scalars(
                    select(TrainJobRow.id)
                    .where(TrainJobRow.state.in_(TERMINAL))
                    .order_by(TrainJobRow.end_time.desc(), TrainJobRow.id.desc())
                    .offset(keep)
                    .limit(500)
                )
            )
            if old:
                session.execute(
                    delete(TrainJobEventRow).where(TrainJobEventRow.job_id.in_(old))
                )
                session.execute(delete(TrainJobRow).where(TrainJobRow.id.in_(old)))
            return len(old)

        return self.write(work)


def _claimable(session: Session) -> bool:
    waiting = (TrainJobRow.state == QUEUED) | (
        (TrainJobRow.state == RUNNING) & (TrainJobRow.lease_expires < utcnow())
    )
    return session.scalar(select(TrainJobRow.id).where(waiting).limit(1)) is not None


def _first(session: Session, *where: Any) -> TrainJobRow | None:
    return session.scalars(
        select(TrainJobRow)
        .where(*where)
        .order_by(
            TrainJobRow.priority.desc(),
            TrainJobRow.create_time.asc(),
            TrainJobRow.id.asc(),
        )
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()


def _fenced(session: Session, job_id: str, fence: Fence) -> TrainJobRow | None:
    """The job row, locked, if `fence` still holds it running."""
    row = session.get(TrainJobRow, job_id, with_for_update=True)
    if (
        row is None
        or row.state != RUNNING
        or row.worker_id != fence.worker_id
        or row.attempt != fence.attempt
    ):
        return None
    return row


def _take(
    session: Session,
    row: TrainJobRow,
    worker_id: str,
    lease_s: float,
    now: dt.datetime,
    message: str,
) -> TrainJobRow:
    row.state = RUNNING
    row.attempt += 1
    row.worker_id = worker_id
    row.lease_expires = now + dt.timedelta(seconds=lease_s)
    row.start_time = row.start_time or now
    _event(session, row, Update(stage="starting", message=message), now)
    return row


def _finish(
    session: Session, row: TrainJobRow, state: str, message: str, now: dt.datetime
) -> None:
    row.state = state
    row.end_time = now
    row.lease_expires = None
    stage = "done" if state == SUCCEEDED else None
    progress = 1.0 if state == SUCCEEDED else None
    _event(session, row, Update(stage=stage, progress=progress, message=message), now)


def _event(
    session: Session, row: TrainJobRow, update: Update, now: dt.datetime
) -> None:
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
        TrainJobEventRow(
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
