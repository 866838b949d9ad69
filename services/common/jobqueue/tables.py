"""Job queue schema (SQLAlchemy 2.0 typed models), one pair of tables per service.

Each service keeps its jobs in tables named after it (``trainer_jobs`` and
``trainer_job_events``, ``merger_jobs`` ...), versioned in its own
``<prefix>_alembic_version``, so several services may share one database
without touching each other's tables, and a service's queue may sit beside
the registry's tables.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common import database
from services.common.database import NAMING_CONVENTION

UTC_TIME = DateTime(timezone=True)
JOB_ID = String(64)
PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def json_numbers(value: Any) -> Any:
    """`value` with NaN and infinities as strings: PostgreSQL's JSON refuses them.

    A diverged run logs loss NaN; `float()` reads the strings back.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_numbers(v) for v in value]
    return value


@dataclass(frozen=True)
class JobTables:
    """The mapped classes of one service's queue."""

    prefix: str
    metadata: MetaData
    Job: Any  # the job row class
    Event: Any  # the event row class

    @property
    def version_table(self) -> str:
        return f"{self.prefix}_alembic_version"

    def owns(self, table_name: str) -> bool:
        return table_name.startswith(f"{self.prefix}_")


@functools.cache
def job_tables(prefix: str) -> JobTables:
    """The job and event tables of the queue named `prefix` (mapped once)."""
    if not PREFIX_RE.match(prefix):
        raise ValueError(f"job table prefix {prefix!r} must match {PREFIX_RE.pattern}")
    jobs, events = f"{prefix}_jobs", f"{prefix}_job_events"

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)
        type_annotation_map = {dict[str, Any]: JSON}

    class JobRow(Base):
        """One job: what to run, who runs it, how it ended."""

        __tablename__ = jobs
        __table_args__ = (
            # The claim query: queued jobs, highest priority first, then oldest.
            Index(f"ix_{jobs}_state_priority", "state", "priority", "create_time"),
            Index(f"ix_{jobs}_create_time", "create_time"),
            Index(f"ix_{jobs}_worker_id", "worker_id"),
            # Retention: finished jobs by age.
            Index(f"ix_{jobs}_state_end_time", "state", "end_time"),
            # Idempotent Start: one job per caller-chosen request id.
            Index(f"ix_{jobs}_request_id", "request_id", unique=True),
        )

        id: Mapped[str] = mapped_column(JOB_ID, primary_key=True)
        # QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.
        state: Mapped[str] = mapped_column(String(16))
        priority: Mapped[int] = mapped_column(Integer)
        # The Start request after defaults, with the facts resolved at Start:
        # all a replica needs to run the job without asking the caller again.
        spec: Mapped[dict[str, Any]] = mapped_column(JSON)
        stage: Mapped[str] = mapped_column(String(64))
        progress: Mapped[float] = mapped_column(Float)
        message: Mapped[str] = mapped_column(Text)
        trace_id: Mapped[str] = mapped_column(String(32))
        create_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
        update_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
        start_time: Mapped[dt.datetime | None] = mapped_column(UTC_TIME)
        end_time: Mapped[dt.datetime | None] = mapped_column(UTC_TIME)
        # Runs started so far; a reclaimed job runs again with attempt + 1.
        attempt: Mapped[int] = mapped_column(Integer)
        # The replica running (or that last ran) the job, and until when its
        # claim holds unless renewed.
        worker_id: Mapped[str] = mapped_column(String(256))
        lease_expires: Mapped[dt.datetime | None] = mapped_column(UTC_TIME)
        cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=false())
        resumed_from_step: Mapped[int] = mapped_column(BigInteger)
        # Sequence number of the newest event; incremented with each insert.
        last_sequence: Mapped[int] = mapped_column(BigInteger)
        result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
        error_code: Mapped[str] = mapped_column(String(32))
        error_message: Mapped[str] = mapped_column(Text)
        # The caller's idempotency key and a digest of its request.
        request_id: Mapped[str | None] = mapped_column(String(128))
        request_digest: Mapped[str] = mapped_column(String(64), server_default="")
        # Facts the runner recorded (step outcomes, sub-job ids), for resuming.
        details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
        # W3C traceparent of the submitting request, and of the span of the
        # latest attempt (a resumed attempt links to it).
        trace_context: Mapped[str] = mapped_column(String(64), server_default="")
        run_context: Mapped[str] = mapped_column(String(64), server_default="")
        # The project the job belongs to, and the claims of the caller who
        # submitted it: each attempt runs as them (services/common/auth).
        project: Mapped[str] = mapped_column(String(64), server_default="default")
        owner: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    class EventRow(Base):
        """One progress event of a job, in order (a lorafleet.v1.ProgressEvent)."""

        __tablename__ = events

        job_id: Mapped[str] = mapped_column(
            JOB_ID, ForeignKey(f"{jobs}.id", ondelete="CASCADE"), primary_key=True
        )
        sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
        state: Mapped[str] = mapped_column(String(16))
        stage: Mapped[str] = mapped_column(String(64))
        progress: Mapped[float] = mapped_column(Float)
        message: Mapped[str] = mapped_column(Text)
        metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
        time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
        step: Mapped[int] = mapped_column(BigInteger)
        total_steps: Mapped[int] = mapped_column(BigInteger)

    return JobTables(prefix, Base.metadata, JobRow, EventRow)


def make_engine(dsn: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """An Engine shared by the queue's threads; sessions are per unit of work.

    On SQLite every writing transaction is BEGIN IMMEDIATE (see
    services.common.database): with a single writer at a time, a claim (read
    the best queued job, mark it running) cannot interleave with another
    replica's claim, which is what ``FOR UPDATE SKIP LOCKED`` gives on
    PostgreSQL. Pre-ping: replicas sit idle between polls, and a dead pooled
    connection must not fail a lease renewal.
    """
    return database.make_engine(
        dsn, busy_timeout_s=busy_timeout_s, pool_size=5, max_overflow=10, pre_ping=True
    )
