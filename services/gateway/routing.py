"""Request routing: a deployment name resolves to the version serving it now."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from lorafleet.v1 import inference_pb2, registry_pb2
from services.common.errors import FailedPrecondition, InvalidArgument
from services.gateway.admission import NAME_RE
from services.gateway.deploy import deploy


class Router:
    """Resolves deployments with a short-lived cache and forwards generations.

    Every request needs the current version; a cache of `ttl_s` keeps the
    registry off the hot path, and deploys through this gateway invalidate it.
    """

    def __init__(self, registry: Any, inference: Any, ttl_s: float = 1.0) -> None:
        self._registry = registry
        self._inference = inference
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def resolve(self, deployment: str) -> Any:
        if not deployment:
            raise InvalidArgument("deployment is required", field="deployment")
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(deployment)
            if hit and now - hit[0] < self._ttl:
                return hit[1]
        found = self._registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name=deployment)
        ).deployment
        with self._lock:
            self._cache[deployment] = (now, found)
        return found

    def generate(self, deployment: str, params: Any) -> tuple[Any, Any]:
        target = self.resolve(deployment)
        response = self._inference.Generate(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=target.model_id, adapter_id=target.adapter_id, params=params
            )
        )
        return target, response.output

    def generate_stream(
        self, deployment: str, params: Any
    ) -> Iterator[tuple[Any, Any]]:
        target = self.resolve(deployment)
        for response in self._inference.GenerateStream(
            inference_pb2.InferenceServiceGenerateStreamRequest(
                model_id=target.model_id, adapter_id=target.adapter_id, params=params
            )
        ):
            yield target, response.chunk

    def deploy(self, name: str, model_id: str, adapter_id: str, reason: str) -> Any:
        if not NAME_RE.match(name or ""):
            raise InvalidArgument(
                f"deployment {name!r} must match {NAME_RE.pattern}", field="deployment"
            )
        if not model_id:
            raise InvalidArgument("model_id is required", field="model_id")
        result = deploy(
            self._registry,
            self._inference,
            name,
            model_id,
            adapter_id,
            reason or "manual deploy",
        )
        self._invalidate(name)
        return result

    def rollback(self, name: str, reason: str) -> Any:
        current = self._registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name=name)
        ).deployment
        if not current.previous_model_id:
            raise FailedPrecondition(
                f"deployment {name!r} has no previous version to roll back to"
            )
        result = deploy(
            self._registry,
            self._inference,
            name,
            current.previous_model_id,
            "",
            reason or f"rollback from {current.model_id}",
            expected_revision=current.revision,
        )
        self._invalidate(name)
        return result

    def _invalidate(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)
