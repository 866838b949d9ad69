"""The durable job queue every service runs its jobs on: own database, claims,
leases, events, idempotent submission, retention."""

from services.common.jobqueue.engine import (
    Codec,
    DurableJobEngine,
    default_worker_id,
    open_engine,
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
    "open_engine",
]
