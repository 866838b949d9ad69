"""gRPC servicer for lorafleet.v1.InferenceService: protobuf <-> inference engine."""

from __future__ import annotations

import logging

from lorafleet.v1 import common_pb2, inference_pb2, inference_pb2_grpc, registry_pb2
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import from_struct
from services.common.deadlines import remaining_s
from services.common.errors import NotFound, shorten
from services.common.server import RunningServer, create_server
from services.inference.convert import (
    FINISH,
    classification_to_pb,
    classify_request_from_pb,
    model_to_pb,
    output_to_pb,
    request_from_pb,
)
from services.inference.engine import ArtifactRef, Engine
from services.inference.engines import make_engine

log = logging.getLogger(__name__)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _deadline(self) -> float | None:
        """The served call's deadline (recorded by the shared interceptor) on
        the engine's clock; None when the caller set none."""
        left = remaining_s()
        return None if left is None else self._engine.now() + left

    def LoadModel(self, request, context):
        loaded = self._engine.load(request.model_id, request.adapter_id, request.pin)
        return inference_pb2.LoadModelResponse(model=model_to_pb(loaded))

    def UnloadModel(self, request, context):
        if not self._engine.unload(request.model_id, request.adapter_id):
            what = (
                f"adapter {shorten(request.adapter_id)!r} of model"
                if request.adapter_id
                else "model"
            )
            raise NotFound(
                f"{what} {shorten(request.model_id)!r} is not loaded",
                field="adapter_id" if request.adapter_id else "model_id",
            )
        return inference_pb2.UnloadModelResponse()

    def ListLoadedModels(self, request, context):
        return inference_pb2.ListLoadedModelsResponse(
            models=[model_to_pb(m) for m in self._engine.loaded()]
        )

    def Generate(self, request, context):
        req = request_from_pb(request.params, self._engine.max_new_tokens_limit)
        result = self._engine.generate(
            request.model_id,
            request.adapter_id,
            req,
            self._deadline(),
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
            self._deadline(),
            context.add_callback,
        ):
            chunk = common_pb2.GenerationChunk(text_delta=delta)
            if final is not None:
                chunk.finish_reason = FINISH[final.finish_reason]
                chunk.completion_tokens = final.completion_tokens
            yield inference_pb2.InferenceServiceGenerateStreamResponse(chunk=chunk)

    def Classify(self, request, context):
        result = self._engine.classify(
            request.model_id,
            request.adapter_id,
            classify_request_from_pb(request),
            self._deadline(),
            context.add_callback,
        )
        return classification_to_pb(result)


RESERVED_THREADS = 8


def create(config: Config, port: int | None = None) -> RunningServer:
    registry = ServiceClient("registry", config, caller="inference")

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
            project=a.project or "default",
        )

    engine = make_engine(config, resolve)

    def register(server):
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(engine), server
        )
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]

    # Every request the engines admit (queued or decoding, per loaded model)
    # holds a server thread while it waits; the rest of the pool stays free
    # for health checks, ListLoadedModels and loads whatever the load.
    admitted = engine.max_admitted
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
    log.info("inference engine %s: %s", config.inference_engine, engine.describe())
    running.on_stop.append(registry.close)
    return running
