"""Protobuf <-> domain conversions shared by the job-running servicers."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from lorafleet.v1 import common_pb2
from services.common.jobs import Job, JobEngine, JobEvent, JobState
from services.common.jobs.model import created_by

# Fields that do not change what a Start request asks for.
_NOT_DIGESTED = ("request_id", "validate_only")


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def struct(data: Mapping[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if data:
        s.update(json_safe(data))
    return s


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python; NaN and infinities come through as floats
    (json_format refuses them) so the checks downstream can name them."""
    return {key: _from_value(value) for key, value in s.fields.items()}


def non_finite(value: Any, path: str = "") -> str:
    """The path of the first NaN or infinity in a JSON-like value ("" if none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "(value)"
    items: Any = ()
    if isinstance(value, Mapping):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    for sub_path, sub in items:
        found = non_finite(sub, sub_path)
        if found:
            return found
    return ""


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [_from_value(v) for v in value.list_value.values]
    if kind in (None, "null_value"):
        return None
    return getattr(value, kind)


def json_safe(value: Any) -> Any:
    """Converts tuples, paths and numpy-ish scalars into JSON-compatible values."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def request_digest(request: Any) -> str:
    """A digest of what a Start request asks for (its request_id left out), so
    a retry reusing the id for a different request can be told apart."""
    copy = type(request)()
    copy.CopyFrom(request)
    for name in _NOT_DIGESTED:
        if name in copy.DESCRIPTOR.fields_by_name:
            copy.ClearField(name)
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def job_state_to_pb(state: JobState) -> int:
    return state.value  # JobState values mirror lorafleet.v1.JobState numbers


def job_state_from_pb(value: int) -> JobState | None:
    return JobState(value) if value else None


def job_status_to_pb(job: Job) -> common_pb2.JobStatus:
    status = common_pb2.JobStatus(
        job_id=job.id,
        state=job_state_to_pb(job.state),
        progress=job.progress,
        stage=job.stage,
        message=job.message,
        trace_id=job.trace_id,
        create_time=timestamp(job.create_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
        project=job.project,
        created_by=created_by(job),
    )
    if job.error_code:
        status.error.code = job.error_code
        status.error.message = job.error_message
    return status


def event_to_pb(job_id: str, event: JobEvent) -> common_pb2.ProgressEvent:
    return common_pb2.ProgressEvent(
        job_id=job_id,
        sequence=event.sequence,
        state=job_state_to_pb(event.state),
        stage=event.stage,
        progress=event.progress,
        message=event.message,
        metrics={k: float(v) for k, v in event.metrics.items()},
        time=timestamp(event.time),
        step=event.step,
        total_steps=event.total_steps,
    )


def watch_to_pb(
    engine: JobEngine, request: Any, context: Any, response_cls: Any, job_to_pb: Any
) -> Iterator[Any]:
    """Streams a job's events as `response_cls(event=..., job=...)` messages."""
    for event, job in engine.watch(
        request.job_id, request.after_sequence, alive=context.is_active
    ):
        yield response_cls(event=event_to_pb(job.id, event), job=job_to_pb(job))


class JobRpcs:
    """The Get/List/Cancel/Watch half of every job service, written once.

    Each job service's servicer keeps its explicitly named RPC methods and
    delegates to this, passing its own protobuf module and job noun
    (e.g. ``trainer_pb2`` and ``"TrainJob"``).
    """

    def __init__(self, engine: JobEngine, pb_module: Any, noun: str, job_to_pb: Any):
        self._engine = engine
        self._to_pb = job_to_pb
        self._get = getattr(pb_module, f"Get{noun}Response")
        self._list = getattr(pb_module, f"List{noun}sResponse")
        self._cancel = getattr(pb_module, f"Cancel{noun}Response")
        self._watch = getattr(pb_module, f"Watch{noun}Response")

    def get(self, request: Any) -> Any:
        return self._get(job=self._to_pb(self._engine.get(request.job_id)))

    def list(self, request: Any) -> Any:
        jobs, token = self._engine.list(
            job_state_from_pb(request.state), request.page_size, request.page_token
        )
        return self._list(jobs=[self._to_pb(j) for j in jobs], next_page_token=token)

    def cancel(self, request: Any) -> Any:
        return self._cancel(job=self._to_pb(self._engine.cancel(request.job_id)))

    def watch(self, request: Any, context: Any) -> Iterator[Any]:
        return watch_to_pb(self._engine, request, context, self._watch, self._to_pb)
