"""The durable job queue every service runs its jobs on: own database, claims,
leases, events, idempotent submission, retention."""

from __future__ import annotations

from typing import Any

from services.common.jobqueue.engine import (
    Codec,
    DurableJobEngine,
    default_worker_id,
)
from services.common.jobqueue.store import Fence, JobStore
from services.common.jobqueue.tables import JobTables, job_tables, make_engine

__all__ = [
    "Codec",
    "DurableJobEngine",
    "Fence",
    "JobStore",
    "JobTables",
    "default_worker_id",
    "job_tables",
    "make_engine",
    "open_store",
]


def open_store(config: Any, service: str, dsn: str = "") -> JobStore:
    """Migrates `service`'s job database (`<service>_dsn`, or `dsn` for a
    second queue in a service's database; a missing PostgreSQL database is
    created) and opens its store; `store.engine.dispose()` closes it.
    """
    from services.common.jobqueue.migrations import upgrade_database

    dsn = dsn or config.job_dsn(service)
    upgrade_database(dsn, service)
    return JobStore(make_engine(dsn), job_tables(service))
