"""Protobuf <-> the inference engine's plain records, at the service's edge."""

from __future__ import annotations

from lorafleet.v1 import common_pb2, inference_pb2
from services.common.convert import timestamp
from services.inference.classify import Classification, ClassifyRequest
from services.inference.engine import ModelInfo
from services.inference.requests import GenerationRequest, GenerationResult
from services.inference.stats import ServingStats

FINISH = {
    "eos": common_pb2.FINISH_REASON_EOS,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "stop": common_pb2.FINISH_REASON_STOP_SEQUENCE,
}


def request_from_pb(p: common_pb2.GenerationParams, limit: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=p.prompt,
        messages=[{"role": m.role, "content": m.content} for m in p.messages],
        raw=p.raw,
        max_new_tokens=p.max_new_tokens or min(64, limit),
        temperature=p.temperature,
        top_p=p.top_p or 1.0,
        seed=p.seed,
        stop=list(p.stop),
    )


def classify_request_from_pb(
    pb: inference_pb2.InferenceServiceClassifyRequest,
) -> ClassifyRequest:
    return ClassifyRequest(texts=list(pb.texts))


def classification_to_pb(
    c: Classification,
) -> inference_pb2.InferenceServiceClassifyResponse:
    return inference_pb2.InferenceServiceClassifyResponse(
        labels=c.labels,
        results=[
            inference_pb2.ClassifiedText(
                label=r.label,
                class_id=r.class_id,
                probabilities=r.probabilities,
                prompt_tokens=r.prompt_tokens,
            )
            for r in c.results
        ],
        prompt_tokens=c.prompt_tokens,
        latency_ms=c.latency_ms,
    )


def output_to_pb(r: GenerationResult) -> common_pb2.GenerationOutput:
    return common_pb2.GenerationOutput(
        text=r.text,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        finish_reason=FINISH[r.finish_reason],
        latency_ms=r.latency_ms,
    )


def stats_to_pb(s: ServingStats) -> inference_pb2.ServingStats:
    means = s.means()
    return inference_pb2.ServingStats(
        requests=s.requests,
        abandoned=s.abandoned,
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        **means,
    )


def model_to_pb(m: ModelInfo) -> inference_pb2.LoadedModel:
    return inference_pb2.LoadedModel(
        model_id=m.model_id,
        kind=getattr(common_pb2, f"ARTIFACT_KIND_{m.kind_name}"),
        name=m.name,
        adapter_ids=sorted(i for a in m.adapters for i in a.adapter_ids),
        parameters=m.parameters,
        device=m.device,
        bytes=m.bytes,
        pinned=m.pinned,
        last_used=timestamp(m.last_used or None),
        adapters=[
            inference_pb2.LoadedAdapter(
                adapter_ids=a.adapter_ids,
                digest=a.digest,
                bytes=a.bytes,
                hits=a.hits,
                loads=a.loads,
                last_used=timestamp(a.last_used or None),
                pinned=a.pinned,
                active_requests=a.active_requests,
                stats=stats_to_pb(a.stats),
                labels=a.labels,
            )
            for a in m.adapters
        ],
        task=m.task,
        labels=m.labels,
        queued_requests=m.queued_requests,
        batch_rows=m.batch_rows,
        decode_steps=m.decode_steps,
        mean_batch_rows=m.mean_batch_rows,
        base_stats=stats_to_pb(m.base_stats),
    )
