"""What a train job stores: the resolved request and its outcome, as JSON.

A queued job must carry everything a replica needs to run it after a restart
or on another machine: the request after defaults, the base model and dataset
artifacts as resolved at Start (ids, digests, local paths) and the dataset
report. Artifacts are kept as their protobuf JSON, so no field is lost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from lorafleet.v1 import common_pb2
from services.common.convert import json_safe
from services.common.jobqueue import Codec
from services.trainer.dataset_report import DatasetReport, Issue
from services.trainer.spec import TrainConfig, TrainSpec


@dataclass
class ResolvedTrainJob:
    """A checked request with its registry artifacts resolved."""

    spec: TrainSpec
    base: Any  # lorafleet.v1.Artifact
    dataset: Any  # lorafleet.v1.Artifact
    dataset_file: Path
    task: str
    split: tuple[int, int]
    report: DatasetReport | None = None


@dataclass
class TrainOutcome:
    adapter_id: str
    metrics: dict[str, float]
    environment: dict[str, Any] = field(default_factory=dict)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keeps the keys `cls` has: a job stored by an older trainer still loads."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _artifact_to_json(artifact: Any) -> dict[str, Any]:
    return json_format.MessageToDict(artifact, preserving_proto_field_name=True)


def _artifact_from_json(data: dict[str, Any]) -> common_pb2.Artifact:
    return json_format.ParseDict(
        data, common_pb2.Artifact(), ignore_unknown_fields=True
    )


def encode_job(job: ResolvedTrainJob) -> dict[str, Any]:
    spec = job.spec
    return {
        "request": {
            "base_model_id": spec.base_model_id,
            "dataset_id": spec.dataset_id,
            "adapter_name": spec.adapter_name,
            "tags": dict(spec.tags),
        },
        "config": json_safe(spec.config.as_dict()),
        "base": _artifact_to_json(job.base),
        "dataset": _artifact_to_json(job.dataset),
        "dataset_file": str(job.dataset_file),
        "task": job.task,
        "split": list(job.split),
        "report": json_safe(dataclasses.asdict(job.report)) if job.report else None,
    }


def decode_job(data: dict[str, Any]) -> ResolvedTrainJob:
    request = data["request"]
    report = None
    if data.get("report"):
        raw = dict(data["report"])
        issues = [Issue(**_known(Issue, i)) for i in raw.pop("issues", [])]
        fatal = [Issue(**_known(Issue, i)) for i in raw.pop("fatal", [])]
        report = DatasetReport(**_known(DatasetReport, raw), issues=issues, fatal=fatal)
    return ResolvedTrainJob(
        spec=TrainSpec(
            base_model_id=request["base_model_id"],
            dataset_id=request["dataset_id"],
            adapter_name=request["adapter_name"],
            config=TrainConfig(**_known(TrainConfig, data["config"])),
            tags=dict(request.get("tags", {})),
        ),
        base=_artifact_from_json(data["base"]),
        dataset=_artifact_from_json(data["dataset"]),
        dataset_file=Path(data["dataset_file"]),
        task=data["task"],
        split=(int(data["split"][0]), int(data["split"][1])),
        report=report,
    )


def encode_outcome(outcome: TrainOutcome) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(outcome))


def decode_outcome(data: dict[str, Any]) -> TrainOutcome:
    outcome = TrainOutcome(**_known(TrainOutcome, data))
    outcome.metrics = {k: float(v) for k, v in outcome.metrics.items()}
    return outcome


TRAIN_JOB_CODEC = Codec(
    encode_spec=encode_job,
    decode_spec=decode_job,
    encode_result=encode_outcome,
    decode_result=decode_outcome,
)
