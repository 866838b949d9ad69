"""What a validation job stores: its spec, the artifacts resolved at Start and
the outcome, as JSON (artifacts as their protobuf JSON, no field lost)."""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format

from lorafleet.v1 import common_pb2
from services.common.convert import json_safe
from services.common.jobqueue import Codec
from services.validator.evaluation import ModelScores
from services.validator.gates import GateResult, Gates
from services.validator.jobs import (
    ResolvedValidation,
    ValidationOutcome,
    ValidationSpec,
)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keeps the keys `cls` has: a job stored by an older validator still loads."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _artifact(data: dict[str, Any] | None) -> Any:
    if data is None:
        return None
    return json_format.ParseDict(
        data, common_pb2.Artifact(), ignore_unknown_fields=True
    )


def _json(artifact: Any) -> dict[str, Any] | None:
    if artifact is None:
        return None
    return json_format.MessageToDict(artifact, preserving_proto_field_name=True)


def _finite(value: Any) -> Any:
    """NaN and infinities are stored as strings (see json_numbers): floats again."""
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(value)
    return value


def encode_job(job: ResolvedValidation) -> dict[str, Any]:
    return {
        "spec": json_safe(dataclasses.asdict(job.spec)),
        "model": _json(job.model),
        "adapter": _json(job.adapter),
        "baseline": _json(job.baseline),
        "dataset": _json(job.dataset),
    }


def decode_job(data: dict[str, Any]) -> ResolvedValidation:
    spec = _known(ValidationSpec, data["spec"])
    spec["gates"] = Gates(**_known(Gates, spec.get("gates", {})))
    return ResolvedValidation(
        ValidationSpec(**spec),
        _artifact(data["model"]),
        _artifact(data.get("adapter")),
        _artifact(data.get("baseline")),
        _artifact(data["dataset"]),
    )


def _scores(data: dict[str, Any] | None) -> ModelScores | None:
    if data is None:
        return None
    fields = {k: _finite(v) for k, v in _known(ModelScores, data).items()}
    fields["samples"] = [tuple(s) for s in data.get("samples", [])]
    return ModelScores(**fields)


def encode_outcome(outcome: ValidationOutcome) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(outcome))


def decode_outcome(data: dict[str, Any]) -> ValidationOutcome:
    fields = _known(ValidationOutcome, data)
    fields["candidate"] = _scores(fields["candidate"])
    fields["baseline"] = _scores(fields.get("baseline"))
    fields["score"] = _finite(fields["score"])
    fields["gates"] = [
        GateResult(**{k: _finite(v) for k, v in _known(GateResult, g).items()})
        for g in fields.get("gates", [])
    ]
    return ValidationOutcome(**fields)


VALIDATION_JOB_CODEC = Codec(
    encode_spec=encode_job,
    decode_spec=decode_job,
    encode_result=encode_outcome,
    decode_result=decode_outcome,
)
