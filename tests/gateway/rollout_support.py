"""A registry and a gateway in process, over real gRPC, in front of a fake
inference service whose answers, errors and latency each test controls.

Faults are deterministic (every n-th request of a model fails), so a test
asserts exact outcomes; nothing here waits on the wall clock except for
events, with generous bounds.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from lorafleet.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.cli.models import import_model
from services.common.config import load_config
from services.common.convert import struct
from tests.deadlines import stretched_channel


@dataclass
class Behaviour:
    """How the fake inference answers one model version."""

    text: str = '{"ok": true}'
    error_every: int = 0  # every n-th request fails with UNAVAILABLE
    delay_s: float = 0.0  # hangs this long unless `release` is set
    sleep_s: float = 0.0  # always answers this much later
    loadable: bool = True
    refuse: grpc.StatusCode | None = None  # every request fails with this code


@dataclass
class FakeInference(inference_pb2_grpc.InferenceServiceServicer):
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.release.set()

    def _behaviour(self, model_id: str, adapter_id: str) -> Behaviour:
        return self.behaviours.get(adapter_id or model_id, Behaviour())

    def LoadModel(self, request, context):
        if not self._behaviour(request.model_id, request.adapter_id).loadable:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "cannot load: too big")
        self.loaded.append(request.adapter_id or request.model_id)
        return inference_pb2.LoadModelResponse()

    def Generate(self, request, context):
        key = request.adapter_id or request.model_id
        behaviour = self._behaviour(request.model_id, request.adapter_id)
        with self.lock:
            n = self.calls[key] = self.calls.get(key, 0) + 1
        if behaviour.delay_s:
            self.release.wait(behaviour.delay_s)
        if behaviour.sleep_s:
            time.sleep(behaviour.sleep_s)
        if behaviour.error_every and n % behaviour.error_every == 0:
            context.abort(grpc.StatusCode.UNAVAILABLE, "injected fault")
        if behaviour.refuse is not None:
            context.abort(behaviour.refuse, "injected refusal")
        return inference_pb2.InferenceServiceGenerateResponse(
            output=common_pb2.GenerationOutput(text=behaviour.text, completion_tokens=3)
        )

    def GenerateStream(self, request, context):
        """The answer in one chunk per word, counted like Generate."""
        key = request.adapter_id or request.model_id
        behaviour = self._behaviour(request.model_id, request.adapter_id)
        with self.lock:
            self.calls[key] = self.calls.get(key, 0) + 1
        if behaviour.refuse is not None:
            context.abort(behaviour.refuse, "injected refusal")
        words = behaviour.text.split(" ")
        for i, word in enumerate(words):
            yield inference_pb2.InferenceServiceGenerateStreamResponse(
                chunk=common_pb2.GenerationChunk(
                    text_delta=word if i == 0 else " " + word,
                    completion_tokens=i + 1,
                )
            )


class RolloutBed:
    """Registry + fake inference + gateway; `restart_gateway` as a new process."""

    def __init__(self, data_dir: Path, tiny_model_dir: Path, **overrides) -> None:
        from services.registry import server as registry_server

        self.inference = FakeInference()
        self._inference_server = grpc.server(futures.ThreadPoolExecutor(8))
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            self.inference, self._inference_server
        )
        port = self._inference_server.add_insecure_port("127.0.0.1:0")
        self._inference_server.start()
        overrides.setdefault("auth_mode", "disabled")
        config = load_config(env={}, data_dir=data_dir, port=0, **overrides)
        self.registry_server = registry_server.create(config, port=0)
        self.config = dataclasses.replace(
            config,
            registry_address=self.registry_server.address,
            inference_address=f"127.0.0.1:{port}",
            worker_id="gateway-bed",
        )
        self.gateway_server = None
        self.start_gateway()
        self._channels: list[grpc.Channel] = []
        self.registry = registry_pb2_grpc.RegistryServiceStub(
            self._channel(self.registry_server.address)
        )
        self.base = import_model(
            tiny_model_dir, "tiny-base", self.config.staging_dir, self.registry
        )
        self._tiny = tiny_model_dir

    def _channel(self, address: str) -> grpc.Channel:
        channel = stretched_channel(address)
        self._channels.append(channel)
        return channel

    @property
    def gateway(self):
        return gateway_pb2_grpc.GatewayServiceStub(
            self._channel(self.gateway_server.address)
        )

    def start_gateway(self, **overrides):
        from services.gateway import server as gateway_server

        port = self.gateway_server.port if self.gateway_server else 0
        config = dataclasses.replace(self.config, **overrides)
        self.gateway_server = gateway_server.create(config, port=port)
        return self.gateway_server

    def kill_gateway(self) -> None:
        """As SIGKILL: the process is gone, nothing is handed back."""
        parts = self.gateway_server.parts
        parts["rollouts"].engine.abandon()
        parts["workflows"].engine.abandon()
        self.gateway_server.server.stop(0)

    def version(
        self, name: str, *, passed: bool | None = True, base_digest: str = ""
    ) -> str:
        """A merged model on the tiny base (its own bytes), with a validation
        report that passed (or not; None: no report)."""
        staging = self.config.staging_dir / f"copy-{uuid.uuid4().hex[:8]}"
        shutil.copytree(self._tiny, staging)
        (staging / "variant.txt").write_text(f"{name} {uuid.uuid4().hex}")
        artifact = self.registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_MERGED_MODEL,
                name=name,
                source_path=str(staging.resolve()),
                metadata=struct({"base_model_digest": base_digest or self.base.digest}),
            ),
            timeout=60,
        ).artifact
        if passed is not None:
            self.registry.RecordValidationReport(
                registry_pb2.RecordValidationReportRequest(
                    report=common_pb2.ValidationReport(
                        candidate_id=artifact.id,
                        passed=passed,
                        score=0.9,
                        score_metric="exact_match",
                        gates=[
                            common_pb2.GateResult(
                                name="min_safety_score",
                                passed=passed,
                                value=0.97 if passed else 0.62,
                                threshold=0.95,
                                message="safety score 0.620 vs minimum 0.95",
                            )
                        ],
                    )
                ),
                timeout=30,
            )
        return artifact.id

    def deploy(self, name: str, model_id: str) -> None:
        self.gateway.Deploy(
            gateway_pb2.DeployRequest(deployment=name, model_id=model_id), timeout=30
        )

    def stop(self) -> None:
        for channel in self._channels:
            channel.close()
        if self.gateway_server is not None:
            self.gateway_server.stop(0.5)
        self.registry_server.stop(0.5)
        self._inference_server.stop(0)


def start_replica(bed: RolloutBed, worker_id: str):
    """Another gateway on the same database (a second replica)."""
    from services.gateway import server as gateway_server

    config = dataclasses.replace(bed.config, worker_id=worker_id)
    return gateway_server.create(config, port=0)
