"""gRPC servicer for lorafleet.v1.TrainerService: protobuf <-> trainer domain."""

from __future__ import annotations

from lorafleet.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import (
    JobRpcs,
    job_status_to_pb,
    struct,
)
from services.common.jobs import Job
from services.common.server import RunningServer, create_server
from services.trainer.dataset_report import DatasetReport
from services.trainer.jobs import ResolvedTrainJob, Trainer
from services.trainer.spec import TrainConfig, TrainSpec

_METHODS = {
    common_pb2.LORA_METHOD_LORA: "lora",
    common_pb2.LORA_METHOD_RSLORA: "rslora",
    common_pb2.LORA_METHOD_DORA: "dora",
}
_SCHEDULES = {
    common_pb2.LR_SCHEDULE_LINEAR: "linear",
    common_pb2.LR_SCHEDULE_COSINE: "cosine",
    common_pb2.LR_SCHEDULE_CONSTANT: "constant",
}
_TASKS = {
    common_pb2.TASK_TYPE_AUTO: "auto",
    common_pb2.TASK_TYPE_TEXT: "text",
    common_pb2.TASK_TYPE_INSTRUCTION: "instruction",
    common_pb2.TASK_TYPE_CHAT: "chat",
}


def config_from_pb(pb: common_pb2.TrainConfig) -> TrainConfig:
    """Zero fields take the documented defaults; negative values stay to be refused."""
    d = TrainConfig()
    return TrainConfig(
        method=_METHODS.get(pb.method, d.method if not pb.method else f"#{pb.method}"),
        rank=pb.rank if pb.HasField("rank") else d.rank,
        alpha=pb.alpha,
        dropout=pb.dropout if pb.HasField("dropout") else d.dropout,
        target_modules=list(pb.target_modules),
        learning_rate=pb.learning_rate
        if pb.HasField("learning_rate")
        else d.learning_rate,
        lr_schedule=_SCHEDULES.get(pb.lr_schedule, d.lr_schedule),
        warmup_steps=pb.warmup_steps,
        max_steps=pb.max_steps,
        epochs=pb.epochs or d.epochs,
        batch_size=pb.batch_size or d.batch_size,
        gradient_accumulation_steps=pb.gradient_accumulation_steps
        or d.gradient_accumulation_steps,
        max_seq_length=pb.max_seq_length or d.max_seq_length,
        seed=pb.seed or d.seed,
        task_type=_TASKS.get(pb.task_type, d.task_type),
        eval_fraction=pb.eval_fraction
        if pb.HasField("eval_fraction")
        else d.eval_fraction,
        weight_decay=pb.weight_decay,
        eval_steps=pb.eval_steps,
    )


def config_to_pb(cfg: TrainConfig) -> common_pb2.TrainConfig:
    inverse = lambda table, v: next((k for k, name in table.items() if name == v), 0)  # noqa: E731
    return common_pb2.TrainConfig(
        method=inverse(_METHODS, cfg.method),
        rank=cfg.rank,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        learning_rate=cfg.learning_rate,
        lr_schedule=inverse(_SCHEDULES, cfg.lr_schedule),
        warmup_steps=cfg.warmup_steps,
        max_steps=cfg.max_steps,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_seq_length=cfg.max_seq_length,
        seed=cfg.seed,
        task_type=inverse(_TASKS, cfg.task_type),
        eval_fraction=cfg.eval_fraction,
        weight_decay=cfg.weight_decay,
        eval_steps=cfg.eval_steps,
    )


def report_to_pb(report: DatasetReport) -> trainer_pb2.DatasetReport:
    inverse_task = next((k for k, v in _TASKS.items() if v == report.task), 0)
    return trainer_pb2.DatasetReport(
        passed=report.passed,
        summary=report.summary,
        task_type=inverse_task,
        row_count=report.row_count,
        empty_rows=report.empty_rows,
        duplicate_rows=report.duplicate_rows,
        over_length_rows=report.over_length_rows,
        truncated_tokens=report.truncated_tokens,
        no_answer_rows=report.no_answer_rows,
        total_tokens=report.total_tokens,
        max_row_tokens=report.max_row_tokens,
        train_rows=report.train_rows,
        eval_rows=report.eval_rows,
        issues=[
            trainer_pb2.DatasetIssue(
                line=i.line, kind=i.kind, message=i.message, fatal=i.fatal
            )
            for i in report.issues
        ],
        max_seq_length=report.max_seq_length,
        eval_fraction=report.eval_fraction,
        seed=report.seed,
    )


def job_to_pb(job: Job) -> trainer_pb2.TrainJob:
    resolved: ResolvedTrainJob = job.spec
    spec = resolved.spec
    pb = trainer_pb2.TrainJob(
        status=job_status_to_pb(job),
        request=trainer_pb2.StartTrainJobRequest(
            base_model_id=spec.base_model_id,
            dataset_id=spec.dataset_id,
            adapter_name=spec.adapter_name,
            tags=spec.tags,
        ),
        effective_config=config_to_pb(spec.config),
    )
    if resolved.report is not None:
        pb.dataset_report.CopyFrom(report_to_pb(resolved.report))
    if job.result is not None:
        pb.result.adapter_id = job.result.adapter_id
        pb.result.metrics.update(job.result.metrics)
        pb.result.environment.CopyFrom(struct(job.result.environment))
    return pb


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self._jobs = JobRpcs(trainer.engine, trainer_pb2, "TrainJob", job_to_pb)

    def StartTrainJob(self, request, context):
        spec = TrainSpec(
            base_model_id=request.base_model_id,
            dataset_id=request.dataset_id,
            adapter_name=request.adapter_name,
            config=config_from_pb(request.config),
            tags=dict(request.tags),
        )
        return trainer_pb2.StartTrainJobResponse(
            job=job_to_pb(self._trainer.start(spec))
        )

    def GetTrainJob(self, request, context):
        return self._jobs.get(request)

    def ListTrainJobs(self, request, context):
        return self._jobs.list(request)

    def CancelTrainJob(self, request, context):
        return self._jobs.cancel(request)

    def WatchTrainJob(self, request, context):
        yield from self._jobs.watch(request, context)

    def ValidateDataset(self, request, context):
        d = TrainConfig()
        cfg = TrainConfig(
            max_seq_length=request.max_seq_length or d.max_seq_length,
            eval_fraction=request.eval_fraction
            if request.HasField("eval_fraction")
            else d.eval_fraction,
            seed=request.seed or d.seed,
            task_type=_TASKS.get(request.task_type, d.task_type),
        )
        report = self._trainer.validate_dataset(
            request.dataset_id, request.base_model_id, cfg
        )
        return trainer_pb2.ValidateDatasetResponse(report=report_to_pb(report))


def create(config: Config, port: int | None = None) -> RunningServer:
    registry = ServiceClient("registry", config)
    trainer = Trainer(config, registry)

    def register(server):
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(
            TrainerServicer(trainer), server
        )
        return [trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name]

    running = create_server("trainer", config, register, port)
    running.on_stop.extend(
        [lambda: trainer.engine.shutdown(config.grace_period_s), registry.close]
    )
    return running
