"""What a workflow job stores: the checked request with the artifacts resolved
at RunWorkflow, and its outcome, as JSON (messages as their protobuf JSON)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lorafleet.v1 import common_pb2, gateway_pb2
from services.common.convert import json_safe
from services.common.jobqueue import Codec
from services.common.records import message_from_json, message_to_json


@dataclass
class WorkflowSpec:
    """A checked RunWorkflow request and what it resolved to."""

    request: Any  # lorafleet.v1.RunWorkflowRequest
    name: str
    deployment: str
    base: Any  # lorafleet.v1.Artifact
    dataset: Any  # lorafleet.v1.Artifact (registered at RunWorkflow)
    # Names this workflow's sub-job request ids ("wf:<token>:train:0"), so a
    # retried Start of a step returns the job the first try started.
    token: str

    def sub_request_id(self, step: str, attempt: int) -> str:
        return f"wf:{self.token}:{step}:{attempt}"


@dataclass
class WorkflowOutcome:
    dataset_id: str
    adapter_id: str = ""
    merged_model_id: str = ""
    report: Any = None  # lorafleet.v1.ValidationReport
    deployment: Any = None  # lorafleet.v1.Deployment
    train_metrics: dict[str, float] = field(default_factory=dict)
    # From the train job's effective config: the validator must use the
    # trainer's split to stay on held-out rows.
    eval_fraction: float = 0.0
    seed: int = 0


def encode_spec(spec: WorkflowSpec) -> dict[str, Any]:
    return {
        "request": message_to_json(spec.request),
        "name": spec.name,
        "deployment": spec.deployment,
        "base": message_to_json(spec.base),
        "dataset": message_to_json(spec.dataset),
        "token": spec.token,
    }


def decode_spec(data: dict[str, Any]) -> WorkflowSpec:
    return WorkflowSpec(
        request=message_from_json(data["request"], gateway_pb2.RunWorkflowRequest),
        name=data["name"],
        deployment=data["deployment"],
        base=message_from_json(data["base"], common_pb2.Artifact),
        dataset=message_from_json(data["dataset"], common_pb2.Artifact),
        token=data["token"],
    )


def encode_outcome(outcome: WorkflowOutcome) -> dict[str, Any]:
    data = {
        f.name: getattr(outcome, f.name)
        for f in dataclasses.fields(outcome)
        if f.name not in ("report", "deployment")
    }
    data["report"] = message_to_json(outcome.report)
    data["deployment"] = message_to_json(outcome.deployment)
    return json_safe(data)


def decode_outcome(data: dict[str, Any]) -> WorkflowOutcome:
    names = {f.name for f in dataclasses.fields(WorkflowOutcome)}
    fields = {k: v for k, v in data.items() if k in names}
    fields["report"] = message_from_json(
        data.get("report"), common_pb2.ValidationReport
    )
    fields["deployment"] = message_from_json(
        data.get("deployment"), common_pb2.Deployment
    )
    fields["train_metrics"] = {
        k: float(v) for k, v in (data.get("train_metrics") or {}).items()
    }
    return WorkflowOutcome(**fields)


WORKFLOW_CODEC = Codec(
    encode_spec=encode_spec,
    decode_spec=decode_spec,
    encode_result=encode_outcome,
    decode_result=decode_outcome,
)
