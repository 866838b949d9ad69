"""Helpers for trainer tests: register a dataset, run a train job over gRPC."""

from __future__ import annotations

import json
from pathlib import Path

from lorafleet.v1 import common_pb2, registry_pb2, trainer_pb2


def register_dataset(suite, name: str, lines: list) -> common_pb2.Artifact:
    """Writes `lines` (dicts become JSON, strings stay raw) and registers them."""
    folder = suite.config.data_dir / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    path: Path = folder / f"{name}.jsonl"
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n")
    return (
        suite.stub("registry")
        .RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name=f"{name}-data",
                source_path=str(path),
            ),
            timeout=30,
        )
        .artifact
    )


def chat_row(question: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def run_train_job(suite, request: trainer_pb2.StartTrainJobRequest):
    """Starts a job and follows it to the end; returns the final TrainJob."""
    trainer = suite.stub("trainer")
    job = trainer.StartTrainJob(request, timeout=60).job
    events = list(
        trainer.WatchTrainJob(
            trainer_pb2.WatchTrainJobRequest(job_id=job.status.job_id), timeout=300
        )
    )
    return events[-1].job
