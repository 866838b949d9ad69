"""Training jobs: checks at Start, the fine-tune in a worker, registration after.

Everything a Start can reject (bad config, unknown ids, malformed dataset) is
checked synchronously so the caller gets the error instead of a failed job.
Accepted jobs go to the trainer's persisted queue (`services.trainer.queue`),
so a restart loses none and replicas sharing the database share the work.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common import instruments
from services.common.config import Config
from services.common.convert import from_struct
from services.common.datasets import dataset_file_of
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.instruments import set_gauge
from services.common.jobqueue import DurableJobEngine, JobStore
from services.common.jobs import Job, JobContext
from services.common.modeling import (
    adaptable_module_names,
    check_modules_to_save,
    check_target_modules,
    load_tokenizer,
    model_module_names,
    resolve_device,
)
from services.common.paths import confine
from services.common.retry import Patience, Patient
from services.trainer import capabilities
from services.trainer.dataset_report import DatasetReport, report_for
from services.trainer.records import (
    TRAIN_JOB_CODEC,
    ResolvedTrainJob,
    TrainOutcome,
)
from services.trainer.registration import register_adapter, registered_adapter
from services.trainer.runner import TrainingTask, run_training
from services.trainer.spec import TrainConfig, TrainSpec

__all__ = ["ResolvedTrainJob", "TrainOutcome", "Trainer"]

log = logging.getLogger(__name__)

MODEL_KINDS = (
    common_pb2.ARTIFACT_KIND_BASE_MODEL,
    common_pb2.ARTIFACT_KIND_MERGED_MODEL,
)


class Trainer:
    """The trainer's domain: turns TrainSpecs into registered adapters."""

    def __init__(
        self, config: Config, registry: Any, store: JobStore, *, start: bool = True
    ) -> None:
        self._config = config
        self._registry = registry
        # For the jobs' calls: a registry restart must not fail a training.
        self._patient_registry = Patient(
            registry, "registry", Patience(config.dependency_patience_s)
        )
        self._device = resolve_device(config.device)
        self.capabilities = capabilities.detect(self._device, config.trainer_gpus)
        # Per base digest: tokenizers and module names are reused across Starts.
        self._tokenizers: dict[str, Any] = {}
        self._module_names: dict[str, list[str]] = {}
        self._all_module_names: dict[str, list[str]] = {}
        self.engine = DurableJobEngine(
            "train",
            self._run,
            store,
            worker_id=config.worker_id_of("trainer"),
            workers=config.job_workers,
            queue_size=config.job_queue_size,
            history=config.job_history,
            retention_s=config.job_retention_s,
            lease_s=config.lease_of("trainer"),
            codec=TRAIN_JOB_CODEC,
            on_end=self._job_ended,
            start=start,
        )

    def start(
        self,
        spec: TrainSpec,
        priority: int = 0,
        *,
        request_id: str = "",
        digest: str = "",
        validate_only: bool = False,
    ) -> Job:
        """Checks everything a training needs, then queues it.

        A `request_id` already used returns the job it created (a retry).
        `validate_only` runs every check and returns the job that would be
        queued, unqueued (id empty); it alone may name the dataset by a file
        path instead of a registry id, so a caller can check a dataset before
        registering it.
        """
        if request_id and not validate_only:
            existing = self.engine.find(request_id, digest)
            if existing is not None:
                return existing
        spec.check(allow_path=validate_only)
        capabilities.check(spec.config, self.capabilities)
        base = self._model(spec.base_model_id)
        if spec.config.target_modules:
            check_target_modules(spec.config.target_modules, self._modules_of(base))
        if spec.dataset_path:
            dataset, dataset_file = common_pb2.Artifact(), self._dataset_path(spec)
        else:
            dataset = self._dataset(spec.dataset_id)
            dataset_file = dataset_file_of(dataset)
        report = report_for(dataset_file, self._tokenizer_of(base), spec.config)
        report.require_passed()
        if spec.config.modules_to_save:
            check_modules_to_save(
                spec.config.modules_to_save,
                self._all_modules_of(base, report.task == "classification"),
            )
        resolved = ResolvedTrainJob(
            spec,
            base,
            dataset,
            dataset_file,
            report.task,
            (report.train_rows, report.eval_rows),
            report,
        )
        if validate_only:
            return Job(
                id="",
                spec=resolved,
                priority=priority,
                message="validated; not queued (validate_only)",
            )
        return self.engine.submit(
            resolved, priority=priority, request_id=request_id, digest=digest
        )

    def _dataset_path(self, spec: TrainSpec) -> Path:
        path = confine(
            spec.dataset_path, self._config.readable_roots(), field="dataset_path"
        )
        if path.suffix != ".jsonl" or not path.is_file():
            raise InvalidArgument(
                f"dataset_path {spec.dataset_path[:80]!r} must be a .jsonl file",
                field="dataset_path",
            )
        return path

    def validate_dataset(
        self, dataset_id: str, base_model_id: str, cfg: TrainConfig
    ) -> DatasetReport:
        """The report Start would compute, for checking a dataset before training."""
        cfg.check()
        for name, value in (
            ("dataset_id", dataset_id),
            ("base_model_id", base_model_id),
        ):
            if not value:
                raise InvalidArgument(f"{name} is required", field=name)
        base = self._model(base_model_id)
        return self._report(base, self._dataset(dataset_id), cfg)

    def _model(self, artifact_id: str) -> Any:
        base = self._get(artifact_id)
        if base.kind not in MODEL_KINDS:
            raise FailedPrecondition(
                f"{artifact_id} is a {common_pb2.ArtifactKind.Name(base.kind)}, "
                "not a model; pass a base or merged model id as base_model_id"
            )
        return base

    def _dataset(self, artifact_id: str) -> Any:
        dataset = self._get(artifact_id)
        if dataset.kind != common_pb2.ARTIFACT_KIND_DATASET:
            raise FailedPrecondition(f"{artifact_id} is not a dataset")
        return dataset

    def _report(self, base: Any, dataset: Any, cfg: TrainConfig) -> DatasetReport:
        # The config-aware report: declared labels, packing/task fit.
        return report_for(dataset_file_of(dataset), self._tokenizer_of(base), cfg)

    def _tokenizer_of(self, base: Any) -> Any:
        if base.digest not in self._tokenizers:
            _bounded(self._tokenizers)
            self._tokenizers[base.digest] = load_tokenizer(Path(base.local_path))
        return self._tokenizers[base.digest]

    def _modules_of(self, base: Any) -> list[str]:
        if base.digest not in self._module_names:
            _bounded(self._module_names)
            self._module_names[base.digest] = adaptable_module_names(
                Path(base.local_path)
            )
        return self._module_names[base.digest]

    def _all_modules_of(self, base: Any, classification: bool) -> list[str]:
        """Every module's name (modules_to_save may name any), per base and head."""
        key = f"{base.digest}:{'cls' if classification else 'lm'}"
        if key not in self._all_module_names:
            _bounded(self._all_module_names)
            self._all_module_names[key] = model_module_names(
                Path(base.local_path), classification=classification
            )
        return self._all_module_names[key]

    def _get(self, artifact_id: str) -> Any:
        return self._registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=artifact_id)
        ).artifact

    # --- the job, run by a queue worker --------------------------------------------
    def _run(self, ctx: JobContext, job: ResolvedTrainJob) -> TrainOutcome:
        done = registered_adapter(self._patient_registry, ctx.job.id)
        if done is not None:
            # An earlier attempt registered the adapter, then its trainer died
            # before marking the job done: finish with that adapter.
            ctx.report(
                stage="done",
                progress=1.0,
                message=f"adapter {done.name}:{done.version} ({done.id}) was "
                "registered by an earlier attempt",
            )
            return TrainOutcome(
                adapter_id=done.id,
                metrics=dict(done.metrics),
                environment=from_struct(done.metadata).get("environment", {}),
            )
        ctx.report(
            stage="prepare",
            progress=0.0,
            message=f"{job.task} task: {job.split[0]} train rows, "
            f"{job.split[1]} held out",
        )
        out_dir = self._config.staging_dir / f"adapter-{ctx.job.id}"
        shutil.rmtree(out_dir, ignore_errors=True)  # a killed attempt's leftovers
        try:
            outcome = self._train(ctx, job, out_dir)
            ctx.check_cancelled()
            ctx.report(
                stage="register",
                progress=0.97,
                message="registering adapter",
                metrics=outcome.metrics,
            )
            adapter, environment = register_adapter(
                self._patient_registry, ctx.job.id, job, outcome, out_dir
            )
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        ctx.report(
            stage="done",
            progress=1.0,
            message=f"adapter {adapter.name}:{adapter.version} ({adapter.id})",
        )
        return TrainOutcome(
            adapter_id=adapter.id, metrics=outcome.metrics, environment=environment
        )

    def _train(self, ctx: JobContext, job: ResolvedTrainJob, out_dir: Path):
        def on_progress(step: int, total: int, metrics: dict[str, float]) -> None:
            shown = next(
                (
                    f"{k} {metrics[k]:.4f}"
                    for k in ("loss", "eval_loss", "train_loss")
                    if k in metrics
                ),
                "",
            )
            _record_progress(ctx.job.id, step, metrics)
            ctx.report(
                stage="train",
                progress=0.95 * step / max(total, 1),
                message=f"step {step}/{total} {shown}".rstrip(),
                metrics=metrics,
                step=step,
                total_steps=total,
            )

        # A child process per training: an OOM or crash fails the job, not the
        # trainer. It resumes from the newest checkpoint in the job's folder,
        # which is how a job taken over after a trainer died picks up again.
        task = TrainingTask(
            job_id=ctx.job.id,
            base_dir=str(job.base.local_path),
            dataset_file=str(job.dataset_file),
            out_dir=str(out_dir),
            checkpoint_dir=str(self._config.checkpoint_dir / ctx.job.id),
            config=job.spec.config.as_dict(),
            device=self._device,
            memory_limit_mb=self._config.trainer_memory_limit_mb,
        )
        return run_training(
            task,
            on_progress,
            lambda: ctx.cancelled,
            on_resume=self._resumed(ctx),
        )

    @staticmethod
    def _resumed(ctx: JobContext):
        def on_resume(step: int) -> None:
            # Set as soon as the attempt resumes, not only in the final outcome.
            log.info("train job %s resumed from checkpoint step %d", ctx.job.id, step)
            ctx.set_resumed_from_step(step)
            ctx.report(stage="train", message=f"resumed from checkpoint step {step}")

        return on_resume

    def _job_ended(self, job_id: str) -> None:
        """A finished job's checkpoints are no longer needed."""
        shutil.rmtree(self._config.checkpoint_dir / job_id, ignore_errors=True)


def _bounded(cache: dict, size: int = 4) -> None:
    """Keeps a per-base cache small: a trainer serves few bases at a time."""
    if len(cache) >= size:
        cache.pop(next(iter(cache)))


def _record_progress(job_id: str, step: int, metrics: dict[str, float]) -> None:
    """The training's loss, throughput and step as gauges, per job."""
    job = {"lorafleet.job.id": job_id}
    set_gauge(instruments.training_steps, step, job)
    for key, split in (
        ("loss", "train"),
        ("train_loss", "train"),
        ("eval_loss", "eval"),
    ):
        if key in metrics:
            set_gauge(
                instruments.training_loss,
                metrics[key],
                {**job, "lorafleet.loss.split": split},
            )
    if "tokens_per_s" in metrics:
        set_gauge(instruments.training_tokens_per_second, metrics["tokens_per_s"], job)
