"""Jobs: the shared record, context and engine interface, and the in-memory engine.

The durable engine every service runs lives in `services.common.jobqueue`.
"""

from services.common.jobs.context import JobContext
from services.common.jobs.memory import MemoryJobEngine
from services.common.jobs.model import (
    Job,
    JobEngine,
    JobEvent,
    JobState,
    Runner,
    Update,
    failure,
)

__all__ = [
    "Job",
    "JobContext",
    "JobEngine",
    "JobEvent",
    "JobState",
    "MemoryJobEngine",
    "Runner",
    "Update",
    "failure",
]
