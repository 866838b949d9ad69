"""What the replica running a job does to it: claim it, hold its lease, report
progress and facts, end it. Every write by the runner is fenced (worker id +
attempt): once another replica has reclaimed the job, the old runner's writes
match no row and are dropped instead of overwriting the new attempt's state."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.common.database import utcnow
from services.common.jobqueue.base import (
    CANCELLED,
    QUEUED,
    RUNNING,
    TERMINAL,
    Fence,
    StoreBase,
)
from services.common.jobqueue.tables import json_numbers
from services.common.jobs.model import Update


class Claims(StoreBase):
    """Claims, leases and the running replica's writes."""

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
