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

from services.common.convert import json_safe
from services.common.jobqueue import Codec
from services.common.records import (
    artifact_from_json,
    known_fields,
    message_to_json,
)
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
        "base": message_to_json(job.base),
        "dataset": message_to_json(job.dataset),
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
        issues = [Issue(**known_fields(Issue, i)) for i in raw.pop("issues", [])]
        fatal = [Issue(**known_fields(Issue, i)) for i in raw.pop("fatal", [])]
        report = DatasetReport(
            **known_fields(DatasetReport, raw), issues=issues, fatal=fatal
        )
    return ResolvedTrainJob(
        spec=TrainSpec(
            base_model_id=request["base_model_id"],
            dataset_id=request["dataset_id"],
            adapter_name=request["adapter_name"],
            config=TrainConfig(**known_fields(TrainConfig, data["config"])),
            tags=dict(request.get("tags", {})),
        ),
        base=artifact_from_json(data["base"]),
        dataset=artifact_from_json(data["dataset"]),
        dataset_file=Path(data["dataset_file"]),
        task=data["task"],
        split=(int(data["split"][0]), int(data["split"][1])),
        report=report,
    )


def encode_outcome(outcome: TrainOutcome) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(outcome))


def decode_outcome(data: dict[str, Any]) -> TrainOutcome:
    outcome = TrainOutcome(**known_fields(TrainOutcome, data))
    outcome.metrics = {k: float(v) for k, v in outcome.metrics.items()}
    return outcome


TRAIN_JOB_CODEC = Codec(
    encode_spec=encode_job,
    decode_spec=decode_job,
    encode_result=encode_outcome,
    decode_result=decode_outcome,
)
