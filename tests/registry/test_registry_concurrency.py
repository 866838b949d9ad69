"""Many threads calling one server at once agree on versions, aliases, revisions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from lorafleet.v1 import common_pb2, registry_pb2
from services.registry import repository

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
THREADS = 16


def _gather(fn, n: int = THREADS) -> list:
    """Runs fn(i) on n threads at once; returns results or the RpcErrors raised."""

    def call(i):
        try:
            return fn(i)
        except grpc.RpcError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(call, range(n)))


@pytest.fixture(params=["locked", "constraints-only"])
def name_lock(request, monkeypatch):
    """Also runs without the PostgreSQL advisory lock: constraints must suffice."""
    if request.param == "constraints-only":
        monkeypatch.setattr(repository, "lock_key", lambda *_: None)
    return request.param


def test_same_content_registered_concurrently_is_one_version(
    register, sources, stub, name_lock
):
    src = sources.model(weights=b"shared" * 1000)
    results = _gather(lambda _: register(BASE_MODEL, "smol", src))
    assert all(isinstance(r, registry_pb2.RegisterArtifactResponse) for r in results)
    assert len({r.artifact.id for r in results}) == 1
    assert {r.artifact.version for r in results} == {1}
    assert sum(not r.existed for r in results) == 1
    listed = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(name="smol"))
    assert len(listed.artifacts) == 1


def test_different_content_concurrently_gets_distinct_versions(
    register, sources, stub, name_lock
):
    paths = [sources.model(f"m{i}", weights=f"w{i}".encode()) for i in range(8)]
    results = _gather(lambda i: register(BASE_MODEL, "smol", paths[i]), n=8)
    assert all(isinstance(r, registry_pb2.RegisterArtifactResponse) for r in results)
    assert sorted(r.artifact.version for r in results) == list(range(1, 9))
    assert len({r.artifact.digest for r in results}) == 8


def test_only_one_concurrent_alias_creation_wins(register, sources, stub):
    versions = [
        register(BASE_MODEL, "smol", sources.model(f"m{i}", f"{i}".encode())).artifact
        for i in range(4)
    ]
    results = _gather(
        lambda i: stub.SetAlias(
            registry_pb2.SetAliasRequest(
                artifact_id=versions[i % 4].id, alias="prod", expected_artifact_id=""
            )
        ),
        n=8,
    )
    winners = [r for r in results if isinstance(r, registry_pb2.SetAliasResponse)]
    losers = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(winners) == 1 and len(losers) == 7
    assert {e.code() for e in losers} == {grpc.StatusCode.ABORTED}
    resolved = stub.ResolveAlias(
        registry_pb2.ResolveAliasRequest(name="smol", alias="prod")
    )
    assert resolved.artifact.id == winners[0].artifact.id


def test_concurrent_deployment_updates_serialise(register, sources, stub):
    model = register(BASE_MODEL, "smol", sources.model()).artifact
    stub.PutDeployment(registry_pb2.PutDeploymentRequest(name="bot", model_id=model.id))
    # Unconditional updates all land, each on its own revision.
    results = _gather(
        lambda i: (
            stub.PutDeployment(
                registry_pb2.PutDeploymentRequest(
                    name="bot", model_id=model.id, reason=f"r{i}"
                )
            ).deployment
        ),
        n=8,
    )
    assert sorted(d.revision for d in results) == list(range(2, 10))
    # Conditional updates from the same revision: exactly one wins.
    results = _gather(
        lambda i: stub.PutDeployment(
            registry_pb2.PutDeploymentRequest(
                name="bot", model_id=model.id, expected_revision=9
            )
        ),
        n=8,
    )
    codes = [r.code() for r in results if isinstance(r, grpc.RpcError)]
    assert codes == [grpc.StatusCode.ABORTED] * 7
