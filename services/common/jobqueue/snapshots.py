"""Reading job rows back as the engine's Job records and JobEvents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common.database import as_utc
from services.common.jobs.model import Job, JobEvent, JobState


@dataclass(frozen=True)
class Codec:
    """Turns a job's domain spec and result into JSON-able dicts and back."""

    encode_spec: Callable[[Any], dict] = dict
    decode_spec: Callable[[dict], Any] = dict
    encode_result: Callable[[Any], dict] = lambda r: dict(r or {})
    decode_result: Callable[[dict], Any] = dict


def snapshot(row: Any, codec: Codec) -> Job:
    """The Job record of a job row (its spec and result decoded by `codec`)."""
    job = Job(
        id=row.id,
        spec=codec.decode_spec(row.spec),
        state=JobState[row.state],
        stage=row.stage,
        progress=row.progress,
        message=row.message,
        create_time=seconds(row.create_time),
        start_time=seconds(row.start_time),
        end_time=seconds(row.end_time),
        error_code=row.error_code,
        error_message=row.error_message,
        result=codec.decode_result(row.result) if row.result is not None else None,
        trace_id=row.trace_id,
        trace_context=row.trace_context or "",
        details=dict(row.details or {}),
        priority=row.priority,
        attempt=row.attempt,
        worker_id=row.worker_id,
        resumed_from_step=row.resumed_from_step,
        request_id=row.request_id or "",
        project=row.project or "default",
        owner=dict(row.owner or {}),
    )
    if row.cancel_requested:
        job.cancel_requested.set()
    return job


def seconds(value: Any) -> float | None:
    value = as_utc(value)
    return value.timestamp() if value is not None else None


def event(row: Any) -> JobEvent:
    """The JobEvent of an event row."""
    return JobEvent(
        sequence=row.sequence,
        state=JobState[row.state],
        stage=row.stage,
        progress=row.progress,
        message=row.message,
        metrics={k: float(v) for k, v in (row.metrics or {}).items()},
        time=seconds(row.time) or 0.0,
        step=row.step,
        total_steps=row.total_steps,
    )
