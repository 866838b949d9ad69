"""gRPC servicer for lorafleet.v1.InferenceService: protobuf <-> inference engine."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lorafleet.v1 import common_pb2, inference_pb2, inference_pb2_grpc, registry_pb2
from services.common.clients import ServiceClient
from services.common.config import Config, ConfigError
from services.common.convert import from_struct
from services.common.errors import NotFound, shorten
from services.common.modeling import resolve_device
from services.common.server import RunningServer, create_server
from services.inference.engine import Engine
from services.inference.requests import GenerationRequest, GenerationResult
from services.inference.scheduler import SchedulerSettings
from services.inference.torch_engine import TorchEngine

log = logging.getLogger(__name__)

_FINISH = {
    "eos": common_pb2.FINISH_REASON_EOS,
    "length": common_pb2.FINISH_REASON_LENGTH,
    "stop": common_pb2.FINISH_REASON_STOP_SEQUENCE,
}


@dataclass(frozen=True)
class ArtifactRef:
    """The facts about a registry artifact the engine needs, without protobuf."""

    id: str
    name: str
    kind_name: str
    local_path: str
    digest: str
    metadata: dict[str, Any]


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


def output_to_pb(r: GenerationResult) -> common_pb2.GenerationOutput:
    return common_pb2.GenerationOutput(
        text=r.text,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        finish_reason=_FINISH[r.finish_reason],
        latency_ms=r.latency_ms,
    )


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _deadline(self, context) -> float | None:
        """The caller's deadline on the engine's clock (None: it set none)."""
        remaining = context.time_remaining()
        if remaining is None or remaining > 10**8:
            return None
        return self._engine.now() + remaining

    def _loaded_to_pb(self, entry) -> inference_pb2.LoadedModel:
        kind = getattr(common_pb2, f"ARTIFACT_KIND_{entry.artifact.kind_name}")
        return inference_pb2.LoadedModel(
            model_id=entry.artifact.id,
            kind=kind,
            name=entry.artifact.name,
            adapter_ids=sorted(entry.adapters),
            parameters=entry.parameters,
            device=str(next(entry.model.parameters()).device),
        )

    def LoadModel(self, request, context):
        entry = self._engine.load(request.model_id, request.adapter_id)
        return inference_pb2.LoadModelResponse(model=self._loaded_to_pb(entry))

    def UnloadModel(self, request, context):
        if not self._engine.unload(request.model_id):
            raise NotFound(
                f"model {shorten(request.model_id)!r} is not loaded", field="model_id"
            )
        return inference_pb2.UnloadModelResponse()

    def ListLoadedModels(self, request, context):
        return inference_pb2.ListLoadedModelsResponse(
            models=[self._loaded_to_pb(e) for e in self._engine.loaded()]
        )

    def Generate(self, request, context):
        req = request_from_pb(request.params, self._engine.max_new_tokens_limit)
        result = self._engine.generate(
            request.model_id,
            request.adapter_id,
            req,
            self._deadline(context),
            context.add_callback,
        )
        return inference_pb2.InferenceServiceGenerateResponse(
            output=output_to_pb(result)
        )

    def GenerateStream(self, request, context):
        req = request_from_pb(request.params, self._engine.max_new_tokens_limit)
        for delta, final in self._engine.stream(
            request.model_id,
            request.adapter_id,
            req,
            self._deadline(context),
            context.add_callback,
        ):
            chunk = common_pb2.GenerationChunk(text_delta=delta)
            if final is not None:
                chunk.finish_reason = _FINISH[final.finish_reason]
                chunk.completion_tokens = final.completion_tokens
            yield inference_pb2.InferenceServiceGenerateStreamResponse(chunk=chunk)


RESERVED_THREADS = 8


def check_settings(settings: SchedulerSettings) -> None:
    for name in ("max_batch", "max_queue", "prefill_tokens_per_step"):
        value = getattr(settings, name)
        if value < 1:
            env = {"prefill_tokens_per_step": "PREFILL_TOKENS"}.get(name, name.upper())
            raise ConfigError(
                f"inference {name} must be at least 1, got {value} "
                f"(LORAFLEET_INFERENCE_{env})"
            )


def apply_cpu_threads(threads: int) -> int:
    """Sets torch's intra-op threads (0 keeps torch's default); returns the
    count in use. Called before any model loads, so every op uses it."""
    if threads < 0:
        raise ConfigError(
            f"inference_threads must be 0 (one per core) or more, got {threads} "
            "(LORAFLEET_INFERENCE_THREADS)"
        )
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def create(config: Config, port: int | None = None) -> RunningServer:
    threads = apply_cpu_threads(config.inference_threads)
    registry = ServiceClient("registry", config)

    def resolve(artifact_id: str) -> ArtifactRef:
        a = registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=artifact_id)
        ).artifact
        return ArtifactRef(
            id=a.id,
            name=a.name,
            kind_name=common_pb2.ArtifactKind.Name(a.kind).removeprefix(
                "ARTIFACT_KIND_"
            ),
            local_path=a.local_path,
            digest=a.digest,
            metadata=from_struct(a.metadata),
        )

    settings = SchedulerSettings(
        max_batch=config.inference_max_batch,
        max_queue=config.inference_max_queue,
        prefill_tokens_per_step=config.inference_prefill_tokens,
    )
    check_settings(settings)
    engine = TorchEngine(
        resolve,
        resolve_device(config.device),
        config.max_loaded_models,
        config.max_new_tokens_limit,
        settings,
    )

    def register(server):
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(engine), server
        )
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]

    # Every request the engines admit (queued or decoding, per loaded model)
    # holds a server thread while it waits; the rest of the pool stays free
    # for health checks, ListLoadedModels and loads whatever the load.
    admitted = config.max_loaded_models * (settings.max_queue + settings.max_batch)
    running = create_server(
        "inference",
        config,
        register,
        port,
        max_workers=max(config.max_workers, admitted + RESERVED_THREADS),
        max_concurrent_rpcs=max(
            config.max_concurrent_rpcs, admitted + 2 * RESERVED_THREADS
        ),
    )
    running.parts["engine"] = engine
    running.on_stop.append(engine.close)
    log.info("inference uses %d CPU thread(s) per operation", threads)
    running.on_stop.append(registry.close)
    return running
