"""Request routing: a deployment name resolves to the arm serving a request.

The deployment (its targets and weights) comes from the registry, so every
gateway replica routes alike; `arms` picks the arm (sticky by routing key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import trace

from lorafleet.v1 import inference_pb2, registry_pb2
from services.common.auth.caller import require
from services.common.auth.permissions import GENERATE
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    LorafleetError,
    NotFound,
)
from services.gateway.admission import NAME_RE
from services.gateway.arms import MAX_STALE_S, TTL_S, Arm, ArmChooser, arms_of
from services.gateway.deploy import deploy
from services.gateway.metrics import ArmTotals, MetricsRecorder
from services.gateway.quality import check_output
from services.gateway.shadow import Mirror

MAX_METRICS_WINDOW_S = 86_400
log = logging.getLogger(__name__)


class Router:
    """Resolves deployments with a short-lived cache and forwards generations.

    Every request needs the current deployment; the registry is kept off the
    request path: a cached deployment younger than `ttl_s` is used as is, an
    older one is used while one background read refreshes it (so weight
    changes reach every replica within about `ttl_s`), and only one older
    than `max_stale_s` or not cached at all is read on the request path. So
    under steady traffic the registry is never waited for, and no request is
    routed by weights older than about `max_stale_s` (rollouts count on that:
    `ROUTING_SETTLE_S`). Deploys through this gateway invalidate the cache.
    """

    def __init__(
        self,
        registry: Any,
        inference: Any,
        recorder: MetricsRecorder,
        mirror: Mirror,
        *,
        ttl_s: float = TTL_S,
        max_stale_s: float = MAX_STALE_S,
        chooser: ArmChooser | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._inference = inference
        self._recorder = recorder
        self._mirror = mirror
        self._clock = clock
        self._chooser = chooser or ArmChooser()
        self._ttl = ttl_s
        self._max_stale = max_stale_s
        self._cache: dict[str, tuple[float, Any]] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    def resolve(self, deployment: str) -> Any:
        if not deployment:
            raise InvalidArgument("deployment is required", field="deployment")
        now = self._clock()
        with self._lock:
            hit = self._cache.get(deployment)
            if hit is not None and now - hit[0] < self._max_stale:
                if now - hit[0] >= self._ttl and deployment not in self._refreshing:
                    self._refreshing.add(deployment)
                    threading.Thread(
                        target=self._refresh,
                        args=(deployment,),
                        name="gateway-route-refresh",
                        daemon=True,
                    ).start()
                return hit[1]
        return self._fetch(deployment)

    def _fetch(self, deployment: str) -> Any:
        started = self._clock()
        found = self._registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name=deployment)
        ).deployment
        with self._lock:
            hit = self._cache.get(deployment)
            if hit is None or hit[0] <= started:
                self._cache[deployment] = (started, found)
        return found

    def _refresh(self, deployment: str) -> None:
        try:
            self._fetch(deployment)
        except NotFound:
            self._invalidate(deployment)
        except LorafleetError as exc:  # keep serving the cached one a while
            log.warning(
                "refreshing deployment %r failed (%s); using the cached one",
                deployment,
                exc.message,
            )
        finally:
            with self._lock:
                self._refreshing.discard(deployment)

    def route(
        self, deployment: str, routing_key: str = "", forced_arm: str = ""
    ) -> tuple[Any, Arm]:
        """The deployment and the arm that serves this request; the current
        span records which (deployment, arm, version, revision)."""
        current = self.resolve(deployment)
        require(GENERATE, current.project or "default", f"deployment {deployment!r}")
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
        started = self._clock()
        try:
            response = self._inference.Generate(
                inference_pb2.InferenceServiceGenerateRequest(
                    model_id=arm.model_id, adapter_id=arm.adapter_id, params=params
                )
            )
        except LorafleetError as exc:
            self._recorder.record(deployment, arm.name, error_code=exc.code)
            raise
        output = response.output
        self._served(
            current, arm, params, output.text, started, output.completion_tokens
        )
        return current, arm, output

    def generate_stream(
        self, deployment: str, params: Any, routing_key: str = "", forced_arm: str = ""
    ) -> Iterator[tuple[Any, Arm, Any]]:
        current, arm = self.route(deployment, routing_key, forced_arm)
        started = self._clock()
        text, tokens = [], 0
        try:
            for response in self._inference.GenerateStream(
                inference_pb2.InferenceServiceGenerateStreamRequest(
                    model_id=arm.model_id, adapter_id=arm.adapter_id, params=params
                )
            ):
                text.append(response.chunk.text_delta)
                tokens = response.chunk.completion_tokens or tokens
                yield current, arm, response.chunk
        except LorafleetError as exc:
            self._recorder.record(deployment, arm.name, error_code=exc.code)
            raise
        self._served(current, arm, params, "".join(text), started, tokens)

    def _served(
        self,
        current: Any,
        arm: Arm,
        params: Any,
        text: str,
        started: float,
        tokens: int,
    ) -> None:
        """Records a served request and queues its shadow copies (after the
        caller has its answer, so shadows never delay it)."""
        phrases = list(current.blocked_phrases)
        self._recorder.record(
            current.name,
            arm.name,
            latency_ms=(self._clock() - started) * 1000.0,
            tokens=tokens,
            quality=check_output(text, current.output_format, phrases),
        )
        shadows = [a for a in arms_of(current) if a.shadow]
        if shadows:
            self._mirror.mirror(
                current.name,
                shadows,
                params,
                text,
                current.output_format,
                tuple(phrases),
            )

    def metrics(self, deployment: str, window_s: int) -> tuple[Any, dict]:
        """The deployment and its per-arm totals over the last `window_s`."""
        if not 1 <= window_s <= MAX_METRICS_WINDOW_S:
            raise InvalidArgument(
                f"window_s must be in [1, {MAX_METRICS_WINDOW_S}], got {window_s}",
                field="window_s",
            )
        current = self._registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name=deployment)
        ).deployment
        totals = self._recorder.totals(deployment, window_s)
        for arm in arms_of(current):
            totals.setdefault(arm.name, ArmTotals(shadow=arm.shadow))
        return current, totals

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
