"""gRPC servicer for lorafleet.v1.MergerService: protobuf <-> merger domain."""

from __future__ import annotations

from lorafleet.v1 import merger_pb2, merger_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import (
    JobRpcs,
    from_struct,
    job_status_to_pb,
    request_digest,
    struct,
)
from services.common.jobqueue import open_store
from services.common.jobs import Job
from services.common.server import RunningServer, create_server
from services.merger.gate import GateSettings
from services.merger.jobs import MergeOutcome, Merger, MergeRequest, ResolvedMerge
from services.merger.quantized import (
    DEFAULT_MAX_PERPLEXITY_RATIO,
    ExportResult,
    QuantizedExport,
)

# The merger's job tables: merger_jobs, merger_job_events.
QUEUE = "merger"

_DTYPES = {
    merger_pb2.OUTPUT_DTYPE_UNSPECIFIED: "same",
    merger_pb2.OUTPUT_DTYPE_SAME: "same",
    merger_pb2.OUTPUT_DTYPE_FLOAT32: "float32",
    merger_pb2.OUTPUT_DTYPE_BFLOAT16: "bfloat16",
    merger_pb2.OUTPUT_DTYPE_FLOAT16: "float16",
}
_DTYPE_NUMBERS = {name: number for number, name in _DTYPES.items() if number}
_PREFIX = "QUANTIZED_FORMAT_"


def _format_name(number: int) -> str:
    """QUANTIZED_FORMAT_GGUF_Q8_0 -> "gguf_q8_0"; unknown numbers stay visible."""
    if number == merger_pb2.QUANTIZED_FORMAT_UNSPECIFIED:
        return ""
    try:
        return merger_pb2.QuantizedFormat.Name(number)[len(_PREFIX) :].lower()
    except ValueError:
        return f"#{number}"


def _format_number(name: str) -> int:
    return merger_pb2.QuantizedFormat.Value(_PREFIX + name.upper())


def exports_from_pb(pbs) -> tuple[QuantizedExport, ...]:
    return tuple(
        QuantizedExport(
            format=_format_name(pb.format),
            max_perplexity_ratio=pb.max_perplexity_ratio
            or DEFAULT_MAX_PERPLEXITY_RATIO,
        )
        for pb in pbs
    )


def export_result_to_pb(result: ExportResult) -> merger_pb2.QuantizedExportResult:
    return merger_pb2.QuantizedExportResult(
        format=_format_number(result.format),
        path=result.path,
        size_bytes=result.size_bytes,
        unquantized_size_bytes=result.unquantized_size_bytes,
        size_reduction=result.size_reduction,
        perplexity=result.perplexity,
        unquantized_perplexity=result.unquantized_perplexity,
        perplexity_change=result.perplexity_change,
        notes=result.notes,
    )


def request_from_pb(pb: merger_pb2.StartMergeJobRequest) -> MergeRequest:
    """Unknown dtype numbers become a name MergeRequest.check refuses."""
    return MergeRequest(
        adapter_id=pb.adapter_id,
        output_name=pb.output_name,
        base_model_id=pb.base_model_id,
        output_dtype=_DTYPES.get(pb.output_dtype, f"#{pb.output_dtype}"),
        tags=dict(pb.tags),
        method=pb.method or "lora",
        input_model_ids=tuple(pb.input_model_ids),
        params=from_struct(pb.params),
        max_shard_size=pb.max_shard_size,
        gate=GateSettings(
            max_perplexity_factor=pb.gate.max_perplexity_factor,
            logit_tolerance=pb.gate.logit_tolerance,
            skip=pb.gate.skip,
        ),
        exports=exports_from_pb(pb.exports),
        recipe=pb.recipe,
    )


def request_to_pb(
    request: MergeRequest, base_model_id: str
) -> merger_pb2.StartMergeJobRequest:
    """Echoes the request with the base actually used, even when it was defaulted."""
    return merger_pb2.StartMergeJobRequest(
        adapter_id=request.adapter_id,
        base_model_id=base_model_id,
        output_name=request.output_name,
        output_dtype=_DTYPE_NUMBERS.get(request.output_dtype, 0),
        tags=request.tags,
        method=request.method,
        input_model_ids=request.input_model_ids,
        params=struct(request.params),
        max_shard_size=request.max_shard_size,
        gate=merger_pb2.MergeGateConfig(
            max_perplexity_factor=request.gate.max_perplexity_factor,
            logit_tolerance=request.gate.logit_tolerance,
            skip=request.gate.skip,
        ),
        exports=[
            merger_pb2.QuantizedExport(
                format=_format_number(e.format),
                max_perplexity_ratio=e.max_perplexity_ratio,
            )
            for e in request.exports
        ],
    )


def result_to_pb(outcome: MergeOutcome) -> merger_pb2.MergeResult:
    return merger_pb2.MergeResult(
        merged_model_id=outcome.merged_model_id,
        tensors_merged=outcome.tensors_merged,
        tensors_total=outcome.tensors_total,
        max_abs_delta=outcome.max_abs_delta,
        seconds=outcome.seconds,
        notes=outcome.notes,
        exports=[export_result_to_pb(r) for r in outcome.exports],
        gate=struct(outcome.gate),
        shards=outcome.shards,
    )


def job_to_pb(job: Job) -> merger_pb2.MergeJob:
    resolved: ResolvedMerge = job.spec
    pb = merger_pb2.MergeJob(
        status=job_status_to_pb(job),
        request=request_to_pb(
            resolved.request, resolved.base.id if resolved.base else ""
        ),
        attempt=job.attempt,
        worker_id=job.worker_id,
    )
    pb.request.request_id = job.request_id
    if job.result is not None:
        pb.result.CopyFrom(result_to_pb(job.result))
    return pb


class MergerServicer(merger_pb2_grpc.MergerServiceServicer):
    def __init__(self, merger: Merger) -> None:
        self._merger = merger
        self._jobs = JobRpcs(merger.engine, merger_pb2, "MergeJob", job_to_pb)

    def StartMergeJob(self, request, context):
        job = self._merger.start(
            request_from_pb(request),
            request_id=request.request_id,
            digest=request_digest(request),
        )
        return merger_pb2.StartMergeJobResponse(job=job_to_pb(job))

    def GetMergeJob(self, request, context):
        return self._jobs.get(request)

    def ListMergeJobs(self, request, context):
        return self._jobs.list(request)

    def CancelMergeJob(self, request, context):
        return self._jobs.cancel(request)

    def WatchMergeJob(self, request, context):
        yield from self._jobs.watch(request, context)


def create(config: Config, port: int | None = None) -> RunningServer:
    """Starts the merger; it reaches the registry at config.registry_address."""
    store = open_store(config, QUEUE)
    registry = ServiceClient("registry", config, caller="merger")
    merger = Merger(config, registry, store)

    def register(server):
        merger_pb2_grpc.add_MergerServiceServicer_to_server(
            MergerServicer(merger), server
        )
        return [merger_pb2.DESCRIPTOR.services_by_name["MergerService"].full_name]

    running = create_server("merger", config, register, port)
    running.on_stop.extend(
        [
            lambda: merger.engine.shutdown(config.grace_period_s),
            registry.close,
            store.engine.dispose,
        ]
    )
    return running
