"""Registering a trained adapter: its metadata, metrics and lineage.

The adapter is registered with its `train_job_id`, so a job retried after its
trainer died between registering and finishing finds that adapter
(`registered_adapter`) instead of registering a second one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.convert import from_struct, struct
from services.common.lookups import registered_by_job
from services.common.modeling import environment_facts
from services.trainer.records import ResolvedTrainJob

# outcome.extra keys recorded in the adapter's registry metadata.
TRAINING_FACTS = (
    "base_quantization",
    "base_compute_dtype",
    "class_labels",
    "packing",
    "mixed_precision",
    "gradient_checkpointing",
    "resumed_from_step",
)


def register_adapter(
    registry: Any, job_id: str, job: ResolvedTrainJob, outcome: Any, out_dir: Path
) -> tuple[Any, dict[str, Any]]:
    """Registers the trained adapter with everything needed to rerun it; returns
    the artifact and the environment facts recorded."""
    cfg = job.spec.config
    split = {
        "seed": cfg.seed,
        "eval_fraction": cfg.eval_fraction,
        "split_train_rows": job.split[0],
        "split_eval_rows": job.split[1],
        "train_examples": outcome.train_rows,
        "eval_examples": outcome.eval_rows,
        "dropped_rows": outcome.dropped_rows,
    }
    environment = {**environment_facts(), "split": split}
    metadata = {
        "base_model_id": job.base.id,
        "base_model_digest": job.base.digest,
        "base_model_name": job.base.name,
        "base_model_type": from_struct(job.base.metadata).get("model_type", ""),
        "dataset_id": job.dataset.id,
        "dataset_digest": job.dataset.digest,
        "task_type": outcome.task,
        "method": cfg.method,
        "rank": cfg.rank,
        "alpha": cfg.alpha,
        "target_modules": outcome.target_modules,
        "train_config": cfg.as_dict(),
        "seed": cfg.seed,
        "split": split,
        "train_rows": outcome.train_rows,
        "eval_rows": outcome.eval_rows,
        "dropped_rows": outcome.dropped_rows,
        "environment": environment,
        # A retried job finds its adapter by this instead of registering twice.
        "train_job_id": job_id,
        # Facts of how it trained: class_labels, packing, base_quantization
        # ("nf4" for QLoRA, read by the merger), mixed precision, ...
        **{k: v for k, v in outcome.extra.items() if k in TRAINING_FACTS},
    }
    response = registry.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(
            reuse_existing=True,
            kind=common_pb2.ARTIFACT_KIND_ADAPTER,
            name=job.spec.adapter_name,
            source_path=str(out_dir),
            metadata=struct(metadata),
            metrics=outcome.metrics,
            tags=job.spec.tags,
            parents=[
                common_pb2.ParentRef(artifact_id=job.base.id, relation="base_model"),
                common_pb2.ParentRef(artifact_id=job.dataset.id, relation="dataset"),
            ],
        )
    )
    return response.artifact, environment


def registered_adapter(registry: Any, job_id: str) -> Any | None:
    """The adapter a previous attempt of `job_id` registered, if any."""
    return registered_by_job(
        registry, common_pb2.ARTIFACT_KIND_ADAPTER, "train_job_id", job_id
    )
