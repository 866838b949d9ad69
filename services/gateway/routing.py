"""Request routing: a deployment name resolves to the arm serving a request.

The deployment (its targets and weights) comes from the registry, so every
gateway replica routes alike; `arms` picks the arm (sticky by routing key).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

from lorafleet.v1 import inference_pb2, registry_pb2
from services.common.errors import FailedPrecondition, InvalidArgument
from services.gateway.admission import NAME_RE
from services.gateway.arms import Arm, ArmChooser, arms_of
from services.gateway.deploy import deploy


class Router:
    """Resolves deployments with a short-lived cache and forwards generations.

    Every request needs the current version; a cache of `ttl_s` keeps the
    registry off the hot path, and deploys through this gateway invalidate it.
    """

    def __init__(
        self,
        registry: Any,
        inference: Any,
        ttl_s: float = 1.0,
        chooser: ArmChooser | None = None,
    ) -> None:
        self._registry = registry
        self._inference = inference
        self._chooser = chooser or ArmChooser()
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

    def route(
        self, deployment: str, routing_key: str = "", forced_arm: str = ""
    ) -> tuple[Any, Arm]:
        """The deployment and the arm that serves this request; the current
        span records which (deployment, arm, version, revision)."""
        current = self.resolve(deployment)
        arm = self._chooser.choose(
            deployment, arms_of(current), routing_key=routing_key, forced_arm=forced_arm
        )
        span = trace.get_current_span()
        span.set_attribute("lorafleet.deployment", deployment)
        span.set_attribute("lorafleet.deployment_revision", current.revision)
        span.set_attribute("lorafleet.arm", arm.name)
        span.set_attribute("lorafleet.model_id", arm.model_id)
        span.set_attribute("lorafleet.adapter_id", arm.adapter_id)
        return current, arm

    def generate(
        self, deployment: str, params: Any, routing_key: str = "", forced_arm: str = ""
    ) -> tuple[Any, Arm, Any]:
        current, arm = self.route(deployment, routing_key, forced_arm)
        response = self._inference.Generate(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=arm.model_id, adapter_id=arm.adapter_id, params=params
            )
        )
        return current, arm, response.output

    def generate_stream(
        self, deployment: str, params: Any, routing_key: str = "", forced_arm: str = ""
    ) -> Iterator[tuple[Any, Arm, Any]]:
        current, arm = self.route(deployment, routing_key, forced_arm)
        for response in self._inference.GenerateStream(
            inference_pb2.InferenceServiceGenerateStreamRequest(
                model_id=arm.model_id, adapter_id=arm.adapter_id, params=params
            )
        ):
            yield current, arm, response.chunk

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
