"""What every unit of work on a job table shares: the session retry policy, the
fence, and how a change of a job is recorded as an event."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common.database import Transactions
from services.common.jobqueue.tables import JobTables, json_numbers
from services.common.jobs.model import Update

QUEUED, RUNNING = "QUEUED", "RUNNING"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


@dataclass(frozen=True)
class Fence:
    """Who may write a running job's state: its claimant, for one attempt."""

    worker_id: str
    attempt: int


class StoreBase:
    """A job table's transactions and the row changes every writer makes."""

    def __init__(self, engine: Engine, tables: JobTables, *, attempts: int = 8):
        self.engine = engine
        self.tables = tables
        self.kind = tables.prefix
        self.db = Transactions(
            engine, what=f"the {tables.prefix} job database", attempts=attempts
        )
        self.postgres = self.db.postgres

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
