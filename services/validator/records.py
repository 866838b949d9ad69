"""What a validation job stores: its spec, the artifacts resolved at Start and
the outcome, as JSON (artifacts as their protobuf JSON, no field lost)."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.common.convert import json_safe
from services.common.jobqueue import Codec
from services.common.records import (
    artifact_from_json,
    known_fields,
    message_to_json,
    number,
)
from services.validator.assessment import ComparisonResult
from services.validator.evaluation import ModelScores
from services.validator.gates import GateResult, Gates
from services.validator.spec import (
    ResolvedValidation,
    ValidationOutcome,
    ValidationSpec,
)
from services.validator.suites.base import Check, SuiteResult


def encode_job(job: ResolvedValidation) -> dict[str, Any]:
    return {
        "spec": json_safe(dataclasses.asdict(job.spec)),
        "model": message_to_json(job.model),
        "adapter": message_to_json(job.adapter),
        "baseline": message_to_json(job.baseline),
        "dataset": message_to_json(job.dataset),
        "base": message_to_json(job.base),
        "production_model": message_to_json(job.production_model),
        "production_adapter": message_to_json(job.production_adapter),
        "probe_set": message_to_json(job.probe_set),
    }


def decode_job(data: dict[str, Any]) -> ResolvedValidation:
    spec = known_fields(ValidationSpec, data["spec"])
    spec["gates"] = Gates(**known_fields(Gates, spec.get("gates", {})))
    spec["grade_bounds"] = [tuple(g) for g in spec.get("grade_bounds", [])]
    return ResolvedValidation(
        ValidationSpec(**spec),
        artifact_from_json(data["model"]),
        artifact_from_json(data.get("adapter")),
        artifact_from_json(data.get("baseline")),
        artifact_from_json(data["dataset"]),
        base=artifact_from_json(data.get("base")),
        production_model=artifact_from_json(data.get("production_model")),
        production_adapter=artifact_from_json(data.get("production_adapter")),
        probe_set=artifact_from_json(data.get("probe_set")),
    )


def _scores(data: dict[str, Any] | None) -> ModelScores | None:
    if data is None:
        return None
    fields = {k: number(v) for k, v in known_fields(ModelScores, data).items()}
    fields["samples"] = [tuple(s) for s in data.get("samples", [])]
    return ModelScores(**fields)


def encode_outcome(outcome: ValidationOutcome) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(outcome))


def decode_outcome(data: dict[str, Any]) -> ValidationOutcome:
    fields = known_fields(ValidationOutcome, data)
    fields["candidate"] = _scores(fields["candidate"])
    fields["baseline"] = _scores(fields.get("baseline"))
    fields["score"] = number(fields["score"])
    fields["gates"] = [
        GateResult(**{k: number(v) for k, v in known_fields(GateResult, g).items()})
        for g in fields.get("gates", [])
    ]
    fields["suites"] = [_suite(r) for r in fields.get("suites", [])]
    fields["comparisons"] = [
        ComparisonResult(
            **{k: _numbers(v) for k, v in known_fields(ComparisonResult, c).items()}
        )
        for c in fields.get("comparisons", [])
    ]
    fields["grade_bounds"] = [tuple(g) for g in fields.get("grade_bounds", [])]
    for key in ("overall",):
        if key in fields:
            fields[key] = number(fields[key])
    return ValidationOutcome(**fields)


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: number(v) for k, v in value.items()}
    return number(value)


def _suite(data: dict[str, Any]) -> SuiteResult:
    return SuiteResult(
        suite=data["suite"],
        score=number(data["score"]),
        checks=[
            Check(**{k: number(v) for k, v in known_fields(Check, c).items()})
            for c in data.get("checks", [])
        ],
        metrics=_numbers(data.get("metrics", {})),
    )


VALIDATION_JOB_CODEC = Codec(
    encode_spec=encode_job,
    decode_spec=decode_job,
    encode_result=encode_outcome,
    decode_result=decode_outcome,
)
