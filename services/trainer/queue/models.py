"""Trainer job database schema (SQLAlchemy 2.0 typed models) and engine factory.

The tables are the trainer's own, prefixed ``trainer_`` and versioned in
``trainer_alembic_version``, so they may live in a database shared with other
services without touching (or being touched by) anyone else's tables.
"""

from __future__ import annotations

import datetime as dt
import math
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
from services.common.database import (  # noqa: F401 (re-exported)
    READ_ONLY,
    as_utc,
    normalize_dsn,
    utcnow,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
VERSION_TABLE = "trainer_alembic_version"
UTC_TIME = DateTime(timezone=True)
JOB_ID = String(64)


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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class TrainJobRow(Base):
    """One training job: what to run, who runs it, how it ended."""

    __tablename__ = "trainer_jobs"
    __table_args__ = (
        # The claim query: queued jobs, highest priority first, then oldest.
        Index("ix_trainer_jobs_state_priority", "state", "priority", "create_time"),
        Index("ix_trainer_jobs_create_time", "create_time"),
        Index("ix_trainer_jobs_worker_id", "worker_id"),
    )

    id: Mapped[str] = mapped_column(JOB_ID, primary_key=True)
    # QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    # The StartTrainJob request after defaults, with the facts resolved at
    # Start (artifacts, local paths, digests, dataset report): all a replica
    # needs to run the job without asking the caller again.
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


class TrainJobEventRow(Base):
    """One progress event of a job, in order (a lorafleet.v1.ProgressEvent)."""

    __tablename__ = "trainer_job_events"

    job_id: Mapped[str] = mapped_column(
        JOB_ID, ForeignKey("trainer_jobs.id", ondelete="CASCADE"), primary_key=True
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
