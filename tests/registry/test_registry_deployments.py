"""PutDeployment revisions, rollback pointers and optimistic concurrency."""

from __future__ import annotations

import grpc
import pytest

from lorafleet.v1 import common_pb2, registry_pb2

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
DATASET = common_pb2.ARTIFACT_KIND_DATASET
ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER
CANARY = common_pb2.DEPLOYMENT_STRATEGY_CANARY


@pytest.fixture
def models(register, sources):
    return {
        "m1": register(BASE_MODEL, "smol", sources.model(weights=b"1")).artifact,
        "m2": register(BASE_MODEL, "smol", sources.model(weights=b"2")).artifact,
        "lora": register(ADAPTER, "lora", sources.adapter()).artifact,
        "data": register(DATASET, "chats", sources.dataset()).artifact,
    }


def _put(stub, metadata=None, **fields) -> common_pb2.Deployment:
    return stub.PutDeployment(
        registry_pb2.PutDeploymentRequest(name="support-bot", **fields),
        metadata=metadata,
    ).deployment


def _put_error(stub, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _put(stub, **fields)
    return info.value


def test_revisions_and_previous_model(stub, models):
    m1, m2, lora = models["m1"], models["m2"], models["lora"]
    first = _put(
        stub,
        model_id=m1.id,
        expected_revision=0,
        reason="launch",
        metadata=[("lorafleet-actor", "alice")],
    )
    assert (first.revision, first.model_id, first.previous_model_id) == (1, m1.id, "")
    assert first.strategy == common_pb2.DEPLOYMENT_STRATEGY_REPLACE  # the default
    assert first.updated_by == "anonymous" and first.reason == "launch"
    second = _put(stub, model_id="smol:2", adapter_id=lora.id, expected_revision=1)
    assert (second.revision, second.model_id, second.previous_model_id) == (
        2,
        m2.id,
        m1.id,
    )
    assert second.adapter_id == lora.id and second.updated_by == "anonymous"
    # A strategy-only change keeps the rollback target.
    third = _put(stub, model_id=m2.id, strategy=CANARY)
    assert (third.revision, third.previous_model_id, third.strategy) == (
        3,
        m1.id,
        CANARY,
    )
    assert third.adapter_id == ""
    got = stub.GetDeployment(registry_pb2.GetDeploymentRequest(name="support-bot"))
    assert got.deployment == third


def test_stale_revision_is_aborted(stub, models):
    _put(stub, model_id=models["m1"].id)
    stale = _put_error(stub, model_id=models["m2"].id, expected_revision=7)
    assert stale.code() == grpc.StatusCode.ABORTED and "revision 1" in stale.details()
    exists = _put_error(stub, model_id=models["m2"].id, expected_revision=0)
    assert exists.code() == grpc.StatusCode.ABORTED
    got = stub.GetDeployment(registry_pb2.GetDeploymentRequest(name="support-bot"))
    assert (got.deployment.revision, got.deployment.model_id) == (1, models["m1"].id)


@pytest.mark.parametrize(
    "fields,code,named",
    [
        ({"model": "data"}, grpc.StatusCode.FAILED_PRECONDITION, "DATASET"),
        ({"model": "lora"}, grpc.StatusCode.FAILED_PRECONDITION, "ADAPTER"),
        (
            {"model": "m1", "adapter": "m2"},
            grpc.StatusCode.FAILED_PRECONDITION,
            "not an ADAPTER",
        ),
        ({"model_id": "c" * 32}, grpc.StatusCode.NOT_FOUND, "c" * 32),
        (
            {"model": "m1", "adapter_id": "c" * 32},
            grpc.StatusCode.NOT_FOUND,
            "adapter_id",
        ),
        ({"model_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "model_id"),
    ],
)
def test_bad_model_or_adapter(stub, models, fields, code, named):
    request = {k: v for k, v in fields.items() if k in ("model_id", "adapter_id")}
    if "model" in fields:
        request["model_id"] = models[fields["model"]].id
    if "adapter" in fields:
        request["adapter_id"] = models[fields["adapter"]].id
    err = _put_error(stub, **request)
    assert err.code() == code and named in err.details()


def test_get_and_list_deployments(stub, models):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetDeployment(registry_pb2.GetDeploymentRequest(name="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    for name in ("c-bot", "a-bot", "b-bot"):
        stub.PutDeployment(
            registry_pb2.PutDeploymentRequest(name=name, model_id=models["m1"].id)
        )
    first = stub.ListDeployments(registry_pb2.ListDeploymentsRequest(page_size=2))
    rest = stub.ListDeployments(
        registry_pb2.ListDeploymentsRequest(
            page_size=2, page_token=first.next_page_token
        )
    )
    assert [d.name for d in first.deployments] == ["a-bot", "b-bot"]
    assert [d.name for d in rest.deployments] == ["c-bot"]
    assert rest.next_page_token == ""
    with pytest.raises(grpc.RpcError) as info:
        stub.PutDeployment(
            registry_pb2.PutDeploymentRequest(
                name="no spaces", model_id=models["m1"].id
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
