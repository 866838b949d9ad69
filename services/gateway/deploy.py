"""Pointing a deployment at a model version, once."""

from __future__ import annotations

from typing import Any

from lorafleet.v1 import common_pb2, inference_pb2, registry_pb2
from services.common.errors import Aborted, NotFound
from services.gateway.subjobs import Patience, call


def deploy(
    registry: Any,
    inference: Any,
    name: str,
    model_id: str,
    adapter_id: str,
    reason: str,
    expected_revision: int | None = None,
) -> Any:
    """Loads the model on the inference service first, then moves the deployment.

    Loading first means a model that cannot be served never receives traffic.
    """
    inference.LoadModel(
        inference_pb2.LoadModelRequest(model_id=model_id, adapter_id=adapter_id)
    )
    request = registry_pb2.PutDeploymentRequest(
        name=name,
        model_id=model_id,
        adapter_id=adapter_id,
        strategy=common_pb2.DEPLOYMENT_STRATEGY_REPLACE,
        reason=reason,
    )
    if expected_revision is not None:
        request.expected_revision = expected_revision
    return registry.PutDeployment(request).deployment


def deploy_once(
    patience: Patience,
    registry: Any,
    inference: Any,
    name: str,
    model_id: str,
    reason: str,
) -> Any:
    """Deploys `model_id` under `name` unless a deploy with `reason` already did.

    A workflow step that is retried (its gateway died, or the registry's reply
    was lost) must add exactly one revision: the deployment is read first,
    and moved only from the revision read (ABORTED means someone else moved
    it in between: read again).
    """

    def current() -> Any | None:
        try:
            return registry.GetDeployment(
                registry_pb2.GetDeploymentRequest(name=name)
            ).deployment
        except NotFound:
            return None

    call(
        patience,
        "inference",
        f"loading {model_id} for deployment {name!r}",
        lambda: inference.LoadModel(inference_pb2.LoadModelRequest(model_id=model_id)),
    )
    while True:
        now = call(patience, "registry", f"reading deployment {name!r}", current)
        if now is not None and now.model_id == model_id and now.reason == reason:
            return now  # this deploy already happened
        try:
            return call(
                patience,
                "registry",
                f"moving deployment {name!r} to {model_id}",
                lambda now=now: deploy_request(registry, name, model_id, reason, now),
            )
        except Aborted:
            continue  # moved by someone else since we read it (or by our lost reply)


def deploy_request(
    registry: Any, name: str, model_id: str, reason: str, now: Any | None
) -> Any:
    return registry.PutDeployment(
        registry_pb2.PutDeploymentRequest(
            name=name,
            model_id=model_id,
            strategy=common_pb2.DEPLOYMENT_STRATEGY_REPLACE,
            reason=reason,
            expected_revision=now.revision if now is not None else 0,
        )
    ).deployment
