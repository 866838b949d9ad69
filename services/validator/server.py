"""gRPC servicer for lorafleet.v1.ValidatorService: protobuf <-> validator domain."""

from __future__ import annotations

from lorafleet.v1 import registry_pb2, validator_pb2, validator_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import JobRpcs, request_digest
from services.common.jobqueue import open_store
from services.common.retry import Patience, Patient
from services.common.server import RunningServer, create_server
from services.validator.convert import job_to_pb, report_to_pb, spec_from_pb
from services.validator.jobs import (
    ResolvedValidation,
    ValidationOutcome,
    Validator,
)
from services.validator.records import VALIDATION_JOB_CODEC

# The validator's job tables: validator_jobs, validator_job_events.
QUEUE = "validator"


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
    registry = ServiceClient("registry", config, caller="validator")

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
