"""gRPC servicer for lorafleet.v1.TrainerService: protobuf <-> trainer domain."""

from __future__ import annotations

from lorafleet.v1 import trainer_pb2, trainer_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import (
    JobRpcs,
    job_status_to_pb,
    request_digest,
    struct,
)
from services.common.jobqueue import open_store
from services.common.jobs import Job
from services.common.server import RunningServer, create_server
from services.trainer.convert import (
    config_from_pb,
    config_to_pb,
    dataset_check_config_from_pb,
    report_to_pb,
)
from services.trainer.jobs import ResolvedTrainJob, Trainer
from services.trainer.spec import TrainSpec

# The trainer's job tables: trainer_jobs, trainer_job_events.
QUEUE = "trainer"


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
            priority=job.priority,
            request_id=job.request_id,
            dataset_path=spec.dataset_path,
        ),
        effective_config=config_to_pb(spec.config),
        attempt=job.attempt,
        resumed_from_step=job.resumed_from_step,
        worker_id=job.worker_id,
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
            dataset_path=request.dataset_path,
        )
        job = self._trainer.start(
            spec,
            priority=request.priority,
            request_id=request.request_id,
            digest=request_digest(request),
            validate_only=request.validate_only,
        )
        return trainer_pb2.StartTrainJobResponse(job=job_to_pb(job))

    def GetTrainJob(self, request, context):
        return self._jobs.get(request)

    def ListTrainJobs(self, request, context):
        return self._jobs.list(request)

    def CancelTrainJob(self, request, context):
        return self._jobs.cancel(request)

    def WatchTrainJob(self, request, context):
        yield from self._jobs.watch(request, context)

    def ValidateDataset(self, request, context):
        cfg = dataset_check_config_from_pb(request)
        report = self._trainer.validate_dataset(
            request.dataset_id, request.base_model_id, cfg
        )
        return trainer_pb2.ValidateDatasetResponse(report=report_to_pb(report))


def create(config: Config, port: int | None = None) -> RunningServer:
    """Migrates the trainer's job database, then serves (resuming its jobs)."""
    store = open_store(config, QUEUE)
    registry = ServiceClient("registry", config, caller="trainer")
    trainer = Trainer(config, registry, store)

    def register(server):
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server(
            TrainerServicer(trainer), server
        )
        return [trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name]

    running = create_server("trainer", config, register, port)
    running.on_stop.extend(
        [
            lambda: trainer.engine.shutdown(config.grace_period_s),
            registry.close,
            store.engine.dispose,
        ]
    )
    return running
