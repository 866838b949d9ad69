"""The adapter lifecycle as one job: train -> merge -> validate -> gate -> register
-> deploy, driving the other services only through their gRPC contracts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorafleet.v1 import (
    common_pb2,
    inference_pb2,
    merger_pb2,
    registry_pb2,
    trainer_pb2,
    validator_pb2,
)
from services.common.config import Config
from services.common.errors import FailedPrecondition, InvalidArgument, from_code
from services.common.jobs import Job, JobContext, JobEngine
from services.common.paths import confine

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,100}$")
VALIDATED_ALIAS = "validated"
TERMINAL = (
    common_pb2.JOB_STATE_SUCCEEDED,
    common_pb2.JOB_STATE_FAILED,
    common_pb2.JOB_STATE_CANCELLED,
)

# Share of overall progress each stage covers (start, end).
STAGES = {
    "train": (0.02, 0.60),
    "merge": (0.60, 0.70),
    "validate": (0.70, 0.95),
    "deploy": (0.95, 1.0),
}


@dataclass
class WorkflowSpec:
    """A checked RunWorkflow request: the train job is already queued."""

    request: Any  # lorafleet.v1.RunWorkflowRequest
    name: str
    deployment: str
    base: Any
    dataset: Any
    train_job: Any


@dataclass
class WorkflowOutcome:
    dataset_id: str
    adapter_id: str = ""
    merged_model_id: str = ""
    report: Any = None
    deployment: Any = None
    train_metrics: dict[str, float] = field(default_factory=dict)


class Workflows:
    """Starts and runs workflow jobs against the other services' clients."""

    def __init__(self, config: Config, clients: dict[str, Any]) -> None:
        self._config = config
        self._registry = clients["registry"]
        self._trainer = clients["trainer"]
        self._merger = clients["merger"]
        self._validator = clients["validator"]
        self._inference = clients["inference"]
        self.engine = JobEngine(
            "workflow",
            self._run,
            workers=max(2, config.job_workers),
            queue_size=config.job_queue_size,
            history=config.job_history,
        )

    # --- start: everything that can be refused is refused here ---------------------
    def start(self, request: Any) -> Job:
        name = request.name
        if not NAME_RE.match(name):
            raise InvalidArgument(
                f"name {name!r} must match {NAME_RE.pattern} (it names "
                "the dataset, adapter, merged model and deployment)",
                field="name",
            )
        deployment = request.deployment or name
        if not NAME_RE.match(deployment):
            raise InvalidArgument(
                f"deployment {deployment!r} must match {NAME_RE.pattern}",
                field="deployment",
            )
        if not request.base_model_id:
            raise InvalidArgument(
                "base_model_id is required (id, name:version or "
                "name@alias of a registered base model)",
                field="base_model_id",
            )
        if bool(request.dataset_id) == bool(request.dataset_path):
            raise InvalidArgument(
                "give exactly one of dataset_id (registered dataset) or "
                "dataset_path (JSONL file to register)",
                field="dataset_id",
            )
        base = self._get(request.base_model_id)
        dataset = (
            self._get(request.dataset_id)
            if request.dataset_id
            else self._register_dataset(request.dataset_path, name)
        )
        train_job = self._trainer.StartTrainJob(
            trainer_pb2.StartTrainJobRequest(
                base_model_id=base.id,
                dataset_id=dataset.id,
                adapter_name=f"{name}-lora",
                config=request.train_config,
                tags={"workflow": name},
            )
        ).job
        try:
            return self.engine.submit(
                WorkflowSpec(request, name, deployment, base, dataset, train_job)
            )
        except Exception:
            self._trainer.CancelTrainJob(
                trainer_pb2.CancelTrainJobRequest(job_id=train_job.status.job_id)
            )
            raise

    def _get(self, artifact_id: str) -> Any:
        return self._registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=artifact_id)
        ).artifact

    def _register_dataset(self, raw_path: str, name: str) -> Any:
        path = confine(raw_path, self._config.readable_roots(), field="dataset_path")
        if path.suffix != ".jsonl" or not path.is_file():
            raise InvalidArgument(
                f"dataset_path {raw_path!r} must be a .jsonl file", field="dataset_path"
            )
        return self._registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name=f"{name}-data",
                source_path=str(path),
                metadata=_dataset_metadata(path),
            )
        ).artifact

    # --- the job ----------------------------------------------------------------
    def _run(self, ctx: JobContext, spec: WorkflowSpec) -> WorkflowOutcome:
        req = spec.request
        outcome = WorkflowOutcome(dataset_id=spec.dataset.id)
        ctx.set_detail("train_job_id", spec.train_job.status.job_id)

        train = self._follow(
            ctx,
            "train",
            spec.train_job.status.job_id,
            self._trainer.WatchTrainJob,
            trainer_pb2.WatchTrainJobRequest,
            self._trainer.CancelTrainJob,
            trainer_pb2.CancelTrainJobRequest,
        )
        outcome.adapter_id = train.result.adapter_id
        outcome.train_metrics = dict(train.result.metrics)
        effective = train.effective_config

        merge_job = self._merger.StartMergeJob(
            merger_pb2.StartMergeJobRequest(
                adapter_id=outcome.adapter_id,
                base_model_id=spec.base.id,
                output_name=spec.name,
                tags={"workflow": spec.name},
            )
        ).job
        ctx.set_detail("merge_job_id", merge_job.status.job_id)
        merge = self._follow(
            ctx,
            "merge",
            merge_job.status.job_id,
            self._merger.WatchMergeJob,
            merger_pb2.WatchMergeJobRequest,
            self._merger.CancelMergeJob,
            merger_pb2.CancelMergeJobRequest,
        )
        outcome.merged_model_id = merge.result.merged_model_id

        validation_job = self._validator.StartValidationJob(
            validator_pb2.StartValidationJobRequest(
                model_id=outcome.merged_model_id,
                baseline_model_id=spec.base.id,
                dataset_id=spec.dataset.id,
                gates=req.gates,
                max_examples=req.validation_examples,
                max_new_tokens=req.validation_max_new_tokens,
                eval_fraction=effective.eval_fraction,
                seed=effective.seed,
            )
        ).job
        ctx.set_detail("validation_job_id", validation_job.status.job_id)
        validation = self._follow(
            ctx,
            "validate",
            validation_job.status.job_id,
            self._validator.WatchValidationJob,
            validator_pb2.WatchValidationJobRequest,
            self._validator.CancelValidationJob,
            validator_pb2.CancelValidationJobRequest,
        )
        outcome.report = validation.report
        ctx.set_detail("outcome", outcome)
        if not validation.report.passed:
            failed = "; ".join(
                g.message for g in validation.report.gates if not g.passed
            )
            raise FailedPrecondition(
                f"validation gates failed ({failed}); merged model "
                f"{outcome.merged_model_id} stays registered without the "
                f"'{VALIDATED_ALIAS}' alias and deployment {spec.deployment!r} "
                "is unchanged"
            )

        self._registry.SetAlias(
            registry_pb2.SetAliasRequest(
                artifact_id=outcome.merged_model_id,
                alias=VALIDATED_ALIAS,
                reason=f"passed validation report {validation.report.id}",
            )
        )
        ctx.report(
            stage="register",
            progress=STAGES["deploy"][0],
            message=f"{outcome.merged_model_id} marked '{VALIDATED_ALIAS}'",
        )
        if not req.skip_deploy:
            ctx.check_cancelled()
            outcome.deployment = deploy(
                self._registry,
                self._inference,
                spec.deployment,
                outcome.merged_model_id,
                "",
                reason=f"workflow {ctx.job.id}",
            )
            ctx.report(
                stage="deploy",
                progress=1.0,
                message=f"deployment {spec.deployment!r} now serves "
                f"{outcome.merged_model_id} (revision "
                f"{outcome.deployment.revision})",
            )
        return outcome

    def _follow(
        self,
        ctx: JobContext,
        stage: str,
        job_id: str,
        watch: Callable,
        watch_request: Any,
        cancel: Callable,
        cancel_request: Any,
    ) -> Any:
        """Relays a sub-job's events until it ends; returns its final job message."""
        low, high = STAGES[stage]
        last = None
        cancel_sent = False
        for update in watch(watch_request(job_id=job_id)):
            last = update.job
            event = update.event
            ctx.report(
                stage=stage,
                progress=low + (high - low) * event.progress,
                message=f"{stage}: {event.message}",
                metrics=dict(event.metrics),
                step=event.step,
                total_steps=event.total_steps,
            )
            if ctx.cancelled and not cancel_sent:
                cancel(cancel_request(job_id=job_id))
                cancel_sent = True
        if last is None:
            raise FailedPrecondition(f"{stage} job {job_id} sent no events")
        state = last.status.state
        if state == common_pb2.JOB_STATE_CANCELLED or ctx.cancelled:
            ctx.check_cancelled()
            raise FailedPrecondition(f"{stage} job {job_id} was cancelled")
        if state != common_pb2.JOB_STATE_SUCCEEDED:
            err = last.status.error
            raise from_code(
                err.code or "INTERNAL", f"{stage} job {job_id} failed: {err.message}"
            )
        return last


def deploy(
    registry: Any,
    inference: Any,
    name: str,
    model_id: str,
    adapter_id: str,
    reason: str,
    expected_revision: int | None = None,
) -> Any:
    """Loads the model on the inference service first, then moves the deployment.

    Loading first means a model that cannot be served never receives traffic.
    """
    inference.LoadModel(
        inference_pb2.LoadModelRequest(model_id=model_id, adapter_id=adapter_id)
    )
    request = registry_pb2.PutDeploymentRequest(
        name=name,
        model_id=model_id,
        adapter_id=adapter_id,
        strategy=common_pb2.DEPLOYMENT_STRATEGY_REPLACE,
        reason=reason,
    )
    if expected_revision is not None:
        request.expected_revision = expected_revision
    return registry.PutDeployment(request).deployment


def _dataset_metadata(path: Path) -> Any:
    from services.common import datasets
    from services.common.convert import struct

    task, rows = datasets.load_dataset(path)
    return struct({"task_type": task, "rows": len(rows), "source": path.name})
