"""What a merge job stores: the request, the artifacts resolved at Start and the
outcome, as JSON. Artifacts are kept as their protobuf JSON, so no field is
lost; merge plans are not stored (the run plans again from the headers)."""

from __future__ import annotations

import dataclasses
from typing import Any

from services.common.convert import json_safe
from services.common.jobqueue import Codec
from services.common.records import (
    artifact_from_json,
    known_fields,
    message_to_json,
)
from services.merger.gate import GateSettings
from services.merger.quantized import QuantizedExport
from services.merger.requests import (
    MergeOutcome,
    MergeRequest,
    ResolvedMerge,
    ResolvedModelMerge,
    export_result,
)


def encode_request(request: MergeRequest) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(request))


def decode_request(data: dict[str, Any]) -> MergeRequest:
    fields = known_fields(MergeRequest, data)
    fields["gate"] = GateSettings(**known_fields(GateSettings, fields.get("gate", {})))
    fields["exports"] = tuple(
        QuantizedExport(**known_fields(QuantizedExport, e))
        for e in fields.get("exports", [])
    )
    fields["input_model_ids"] = tuple(fields.get("input_model_ids", ()))
    fields["slices"] = tuple(fields.get("slices", ()))
    fields["tags"] = dict(fields.get("tags", {}))
    return MergeRequest(**fields)


def encode_job(job: ResolvedMerge | ResolvedModelMerge) -> dict[str, Any]:
    if isinstance(job, ResolvedModelMerge):
        return {
            "kind": "models",
            "request": encode_request(job.request),
            "base": message_to_json(job.base),
            "inputs": [message_to_json(a) for a in job.inputs],
            "tokenizer": message_to_json(job.tokenizer) if job.tokenizer else None,
        }
    return {
        "kind": "lora",
        "request": encode_request(job.request),
        "adapter": message_to_json(job.adapter),
        "base": message_to_json(job.base),
        "base_quantization": job.base_quantization,
    }


def decode_job(data: dict[str, Any]) -> ResolvedMerge | ResolvedModelMerge:
    request = decode_request(data["request"])
    if data.get("kind") == "models":
        return ResolvedModelMerge(
            request,
            artifact_from_json(data.get("base")),
            [artifact_from_json(a) for a in data.get("inputs", [])],
            None,
            artifact_from_json(data["tokenizer"]) if data.get("tokenizer") else None,
        )
    return ResolvedMerge(
        request,
        artifact_from_json(data["adapter"]),
        artifact_from_json(data["base"]),
        None,
        data.get("base_quantization", ""),
    )


def encode_outcome(outcome: MergeOutcome) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(outcome))


def decode_outcome(data: dict[str, Any]) -> MergeOutcome:
    fields = known_fields(MergeOutcome, data)
    fields["exports"] = [export_result(e) for e in fields.get("exports", [])]
    return MergeOutcome(**fields)


MERGE_JOB_CODEC = Codec(
    encode_spec=encode_job,
    decode_spec=decode_job,
    encode_result=encode_outcome,
    decode_result=decode_outcome,
)
