"""gRPC servicer for lorafleet.v1.ValidatorService: protobuf <-> validator domain."""

from __future__ import annotations

from lorafleet.v1 import common_pb2, registry_pb2, validator_pb2, validator_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import (
    JobRpcs,
    job_status_to_pb,
    request_digest,
    timestamp,
)
from services.common.gates import gates_from_pb
from services.common.jobqueue import open_store
from services.common.jobs import Job
from services.common.retry import Patience, Patient
from services.common.server import RunningServer, create_server
from services.validator.evaluation import ModelScores
from services.validator.jobs import (
    ResolvedValidation,
    ValidationOutcome,
    ValidationSpec,
    Validator,
)
from services.validator.records import VALIDATION_JOB_CODEC

# The validator's job tables: validator_jobs, validator_job_events.
QUEUE = "validator"


def spec_from_pb(req: validator_pb2.StartValidationJobRequest) -> ValidationSpec:
    d = ValidationSpec(model_id="")
    return ValidationSpec(
        model_id=req.model_id,
        adapter_id=req.adapter_id,
        baseline_model_id=req.baseline_model_id,
        dataset_id=req.dataset_id,
        gates=gates_from_pb(req.gates),
        max_examples=req.max_examples or d.max_examples,
        max_new_tokens=req.max_new_tokens or d.max_new_tokens,
        eval_fraction=req.eval_fraction or d.eval_fraction,
        seed=req.seed or d.seed,
    )


def scores_to_pb(s: ModelScores) -> common_pb2.ModelScores:
    return common_pb2.ModelScores(
        model_id=s.model_id,
        perplexity=s.perplexity,
        exact_match=s.exact_match,
        latency_ms_per_token=s.latency_ms_per_token,
        latency_ms_per_request=s.latency_ms_per_request,
        examples=s.examples,
        loads=s.loads,
        generates=s.generates,
        samples=[
            common_pb2.SampleGeneration(prompt=p, output=o, reference=r)
            for p, o, r in s.samples
        ],
    )


def report_to_pb(
    job: ResolvedValidation, o: ValidationOutcome
) -> common_pb2.ValidationReport:
    report = common_pb2.ValidationReport(
        id=o.report_id,
        candidate_id=o.candidate_id,
        baseline_id=job.baseline.id if job.baseline else "",
        dataset_id=job.dataset.id,
        candidate=scores_to_pb(o.candidate),
        score=o.score,
        score_metric=o.score_metric,
        passed=o.passed,
        create_time=timestamp(o.create_time),
        gates=[
            common_pb2.GateResult(
                name=g.name,
                passed=g.passed,
                value=g.value,
                threshold=g.threshold,
                message=g.message,
            )
            for g in o.gates
        ],
    )
    if o.baseline is not None:
        report.baseline.CopyFrom(scores_to_pb(o.baseline))
    return report


def job_to_pb(job: Job) -> validator_pb2.ValidationJob:
    resolved: ResolvedValidation = job.spec
    s = resolved.spec
    pb = validator_pb2.ValidationJob(
        status=job_status_to_pb(job),
        request=validator_pb2.StartValidationJobRequest(
            model_id=s.model_id,
            adapter_id=s.adapter_id,
            baseline_model_id=s.baseline_model_id,
            dataset_id=s.dataset_id,
            max_examples=s.max_examples,
            max_new_tokens=s.max_new_tokens,
            eval_fraction=s.eval_fraction,
            seed=s.seed,
            request_id=job.request_id,
        ),
        attempt=job.attempt,
        worker_id=job.worker_id,
    )
    if job.result is not None:
        pb.report.CopyFrom(report_to_pb(resolved, job.result))
    return pb


class ValidatorServicer(validator_pb2_grpc.ValidatorServiceServicer):
    def __init__(self, validator: Validator) -> None:
        self._validator = validator
        self._jobs = JobRpcs(
            validator.engine, validator_pb2, "ValidationJob", job_to_pb
        )

    def StartValidationJob(self, request, context):
        job = self._validator.start(
            spec_from_pb(request),
            request_id=request.request_id,
            digest=request_digest(request),
        )
        return validator_pb2.StartValidationJobResponse(job=job_to_pb(job))

    def GetValidationJob(self, request, context):
        return self._jobs.get(request)

    def ListValidationJobs(self, request, context):
        return self._jobs.list(request)

    def CancelValidationJob(self, request, context):
        return self._jobs.cancel(request)

    def WatchValidationJob(self, request, context):
        yield from self._jobs.watch(request, context)


def create(config: Config, port: int | None = None) -> RunningServer:
    registry = ServiceClient("registry", config)

    # A registry restart must not fail a validation that is recording its report.
    patient = Patient(registry, "registry", Patience(config.dependency_patience_s))

    def record(job: ResolvedValidation, outcome: ValidationOutcome) -> str:
        stored = patient.RecordValidationReport(
            registry_pb2.RecordValidationReportRequest(
                report=report_to_pb(job, outcome)
            )
        )
        return stored.report.id

    store = open_store(config, QUEUE)
    validator = Validator(config, registry, record, store, VALIDATION_JOB_CODEC)

    def register(server):
        validator_pb2_grpc.add_ValidatorServiceServicer_to_server(
            ValidatorServicer(validator), server
        )
        return [validator_pb2.DESCRIPTOR.services_by_name["ValidatorService"].full_name]

    running = create_server("validator", config, register, port)
    running.on_stop.extend(
        [
            lambda: validator.engine.shutdown(config.grace_period_s),
            registry.close,
            store.engine.dispose,
        ]
    )
    return running
