"""What a merge job stores: the request, the artifacts resolved at Start and the
outcome, as JSON. Artifacts are kept as their protobuf JSON, so no field is
lost; merge plans are not stored (the run plans again from the headers)."""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format

from lorafleet.v1 import common_pb2
from services.common.convert import json_safe
from services.common.jobqueue import Codec
from services.merger.gate import GateSettings
from services.merger.quantized import QuantizedExport
from services.merger.requests import (
    MergeOutcome,
    MergeRequest,
    ResolvedMerge,
    ResolvedModelMerge,
    export_result,
)


def _artifact_to_json(artifact: Any) -> dict[str, Any] | None:
    if artifact is None:
        return None
    return json_format.MessageToDict(artifact, preserving_proto_field_name=True)


def _artifact_from_json(data: dict[str, Any] | None) -> Any:
    if data is None:
        return None
    return json_format.ParseDict(
        data, common_pb2.Artifact(), ignore_unknown_fields=True
    )


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keeps the keys `cls` has: a job stored by an older merger still loads."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def encode_request(request: MergeRequest) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(request))


def decode_request(data: dict[str, Any]) -> MergeRequest:
    fields = _known(MergeRequest, data)
    fields["gate"] = GateSettings(**_known(GateSettings, fields.get("gate", {})))
    fields["exports"] = tuple(
        QuantizedExport(**_known(QuantizedExport, e)) for e in fields.get("exports", [])
    )
    fields["input_model_ids"] = tuple(fields.get("input_model_ids", ()))
    fields["tags"] = dict(fields.get("tags", {}))
    return MergeRequest(**fields)


def encode_job(job: ResolvedMerge | ResolvedModelMerge) -> dict[str, Any]:
    if isinstance(job, ResolvedModelMerge):
        return {
            "kind": "models",
            "request": encode_request(job.request),
            "base": _artifact_to_json(job.base),
            "inputs": [_artifact_to_json(a) for a in job.inputs],
        }
    return {
        "kind": "lora",
        "request": encode_request(job.request),
        "adapter": _artifact_to_json(job.adapter),
        "base": _artifact_to_json(job.base),
        "base_quantization": job.base_quantization,
    }


def decode_job(data: dict[str, Any]) -> ResolvedMerge | ResolvedModelMerge:
    request = decode_request(data["request"])
    if data.get("kind") == "models":
        return ResolvedModelMerge(
            request,
            _artifact_from_json(data.get("base")),
            [_artifact_from_json(a) for a in data.get("inputs", [])],
            None,
        )
    return ResolvedMerge(
        request,
        _artifact_from_json(data["adapter"]),
        _artifact_from_json(data["base"]),
        None,
        data.get("base_quantization", ""),
    )


def encode_outcome(outcome: MergeOutcome) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(outcome))


def decode_outcome(data: dict[str, Any]) -> MergeOutcome:
    fields = _known(MergeOutcome, data)
    fields["exports"] = [export_result(e) for e in fields.get("exports", [])]
    return MergeOutcome(**fields)


MERGE_JOB_CODEC = Codec(
    encode_spec=encode_job,
    decode_spec=decode_job,
    encode_result=encode_outcome,
    decode_result=decode_outcome,
)
