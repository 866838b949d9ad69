"""Immutable explicit versions, archive, rollback, alias history, audit, cards."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.protobuf import json_format

from lorafleet.v1 import common_pb2, registry_pb2

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER
DATASET = common_pb2.ARTIFACT_KIND_DATASET
# A name the client asserts: never believed (auth is off here, so every
# caller is "anonymous"; tests/test_auth.py checks authenticated names).
ALICE = (("lorafleet-actor", "alice"),)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_explicit_version_is_immutable(register, sources, stub):
    v5 = register(BASE_MODEL, "smol", sources.model("a", b"aaa"), version=5)
    assert v5.artifact.version == 5 and not v5.existed
    again = register(BASE_MODEL, "smol", sources.model("a", b"aaa"), version=5)
    assert again.existed and again.artifact.id == v5.artifact.id
    with pytest.raises(grpc.RpcError) as err:
        register(BASE_MODEL, "smol", sources.model("b", b"bbb"), version=5)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert v5.artifact.digest in err.value.details()
    # Auto-increment continues after the highest version.
    assert (
        register(BASE_MODEL, "smol", sources.model("c", b"ccc")).artifact.version == 6
    )
    # The same content under another explicit version is refused too.
    assert (
        _code(
            lambda: register(BASE_MODEL, "smol", sources.model("a", b"aaa"), version=9)
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )
    assert (
        _code(
            lambda: register(BASE_MODEL, "smol", sources.model("d", b"d"), version=-1)
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def _versions(register, sources, n: int, name: str = "smol"):
    return [
        register(
            BASE_MODEL, name, sources.model(f"{name}{i}", f"{i}".encode())
        ).artifact
        for i in range(n)
    ]


def test_alias_history_rollback_and_archive(register, sources, stub):
    v1, v2, v3 = _versions(register, sources, 3)
    for v, why in ((v1, "first"), (v2, "better"), (v3, "best")):
        stub.SetAlias(
            registry_pb2.SetAliasRequest(
                artifact_id=v.id, alias="production", reason=why
            ),
            metadata=ALICE,
        )
    history = stub.ListAliasHistory(
        registry_pb2.ListAliasHistoryRequest(name="smol", alias="production")
    ).events
    assert [(e.from_artifact_id, e.to_artifact_id) for e in history] == [
        (v2.id, v3.id),
        (v1.id, v2.id),
        ("", v1.id),
    ]
    assert {e.actor for e in history} == {"anonymous"}
    assert [e.reason for e in history] == ["best", "better", "first"]
    assert all(e.time.seconds > 0 for e in history)
    back = stub.RollbackAlias(
        registry_pb2.RollbackAliasRequest(
            name="smol", alias="production", reason="v3 regressed"
        )
    )
    assert back.artifact.id == v2.id and back.previous_artifact_id == v3.id
    # Compare-and-set on rollback too.
    assert (
        _code(
            lambda: stub.RollbackAlias(
                registry_pb2.RollbackAliasRequest(
                    name="smol", alias="production", expected_artifact_id=v3.id
                )
            )
        )
        == grpc.StatusCode.ABORTED
    )
    explicit = stub.RollbackAlias(
        registry_pb2.RollbackAliasRequest(
            name="smol", alias="production", to_artifact_id=v1.id
        )
    )
    assert explicit.artifact.id == v1.id
    assert (
        _code(
            lambda: stub.RollbackAlias(
                registry_pb2.RollbackAliasRequest(name="smol", alias="nope")
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    # Archived versions receive no new alias without the explicit flag.
    archived = stub.ArchiveArtifact(
        registry_pb2.ArchiveArtifactRequest(id=v3.id, archived=True)
    ).artifact
    assert archived.archived
    assert (
        _code(
            lambda: stub.SetAlias(
                registry_pb2.SetAliasRequest(artifact_id=v3.id, alias="staging")
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    moved = stub.SetAlias(
        registry_pb2.SetAliasRequest(
            artifact_id=v3.id, alias="staging", allow_archived=True
        )
    )
    assert moved.artifact.aliases == ["staging"]


def test_audit_log_records_every_mutation(register, sources, stub):
    v1, v2 = _versions(register, sources, 2)
    stub.SetAlias(
        registry_pb2.SetAliasRequest(artifact_id=v1.id, alias="production"),
        metadata=ALICE,
    )
    stub.SetAlias(
        registry_pb2.SetAliasRequest(artifact_id=v2.id, alias="production"),
        metadata=ALICE,
    )
    stub.ArchiveArtifact(registry_pb2.ArchiveArtifactRequest(id=v1.id, archived=True))
    stub.PutDeployment(registry_pb2.PutDeploymentRequest(name="bot", model_id=v2.id))
    stub.RecordValidationReport(
        registry_pb2.RecordValidationReportRequest(
            report=common_pb2.ValidationReport(candidate_id=v2.id, passed=True)
        )
    )
    events = stub.ListAuditEvents(registry_pb2.ListAuditEventsRequest()).events
    actions = [e.action for e in events]
    assert actions == [
        "report.record",
        "deployment.put",
        "artifact.archive",
        "alias.set",
        "alias.set",
        "artifact.register",
        "artifact.register",
    ]
    move = events[3]
    assert move.principal == "anonymous" and move.target == "smol@production"
    assert json_format.MessageToDict(move.before) == {"artifact_id": v1.id}
    assert json_format.MessageToDict(move.after)["artifact_id"] == v2.id
    by_target = stub.ListAuditEvents(
        registry_pb2.ListAuditEventsRequest(target="smol@production", page_size=1)
    )
    assert len(by_target.events) == 1 and by_target.next_page_token
    assert by_target.events[0].id == move.id
    now = dt.datetime.now(dt.timezone.utc)
    future = registry_pb2.ListAuditEventsRequest()
    future.start_time.FromDatetime(now + dt.timedelta(hours=1))
    assert not stub.ListAuditEvents(future).events
    past = registry_pb2.ListAuditEventsRequest(action="alias.set")
    past.start_time.FromDatetime(now - dt.timedelta(hours=1))
    past.end_time.FromDatetime(now + dt.timedelta(hours=1))
    assert len(stub.ListAuditEvents(past).events) == 2
    bad = registry_pb2.ListAuditEventsRequest()
    bad.start_time.FromDatetime(now)
    bad.end_time.FromDatetime(now - dt.timedelta(hours=1))
    assert _code(lambda: stub.ListAuditEvents(bad)) == grpc.StatusCode.INVALID_ARGUMENT


def _lineage_setup(register, sources):
    base = register(BASE_MODEL, "smollm2", sources.model()).artifact
    data = register(DATASET, "chat-data", sources.dataset(rows=5)).artifact
    adapters = []
    for i, loss in enumerate((1.5, 1.1, 0.9)):
        adapters.append(
            register(
                ADAPTER,
                "support",
                sources.adapter(f"a{i}", f"w{i}".encode()),
                metrics={"eval_loss": loss},
                tags={"team": "cx" if i else "ml"},
                metadata={"task_type": "chat", "train_config": {"rank": 8, "seed": i}},
                parents=[
                    common_pb2.ParentRef(artifact_id=base.id, relation="base_model"),
                    common_pb2.ParentRef(artifact_id=data.id, relation="dataset"),
                ],
            ).artifact
        )
    return base, data, adapters


def _search(stub, filter="", order_by="", **kw):
    return stub.ListArtifacts(
        registry_pb2.ListArtifactsRequest(filter=filter, order_by=order_by, **kw)
    )


def test_search_filters_sort_and_pages(register, sources, stub):
    base, data, adapters = _lineage_setup(register, sources)
    ids = lambda r: [a.id for a in r.artifacts]  # noqa: E731
    got = _search(stub, "kind = ADAPTER AND eval_loss < 1.2", "metrics.eval_loss asc")
    assert ids(got) == [adapters[2].id, adapters[1].id]
    got = _search(stub, "base_model = smollm2 AND tags.team = cx", "version desc")
    assert ids(got) == [adapters[2].id, adapters[1].id]
    assert ids(_search(stub, f"base_model = {base.id} AND task_type = CHAT")) == ids(
        _search(stub, "kind = adapter")
    )
    assert ids(_search(stub, "metrics.eval_loss >= 1.5")) == [adapters[0].id]
    assert ids(_search(stub, 'name = "chat-data"')) == [data.id]
    assert (
        ids(_search(stub, "create_time > 2000-01-01T00:00:00Z", "name asc"))[0]
        == data.id
    )
    assert not _search(stub, "create_time > 2999-01-01T00:00:00Z").artifacts
    assert ids(_search(stub, "archived = false AND version = 2")) == [adapters[1].id]
    first = _search(stub, "kind = ADAPTER", "version asc", page_size=2)
    assert [a.version for a in first.artifacts] == [1, 2] and first.next_page_token
    rest = _search(
        stub,
        "kind = ADAPTER",
        "version asc",
        page_size=2,
        page_token=first.next_page_token,
    )
    assert [a.version for a in rest.artifacts] == [3] and not rest.next_page_token
    # A token from another filter is refused.
    assert (
        _code(lambda: _search(stub, "kind = DATASET", page_token=first.next_page_token))
        == grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.parametrize(
    "filter, order_by, token",
    [
        ("eval_loss <", "", "eval_loss <"),
        ("eval_loss < abc", "", "'abc'"),
        ("kind = WIDGET", "", "'WIDGET'"),
        ("create_time > yesterday", "", "'yesterday'"),
        ("tags.team < cx", "", "tags.team"),
        ("eval_loss ~ 1", "", "'~'"),
        ("a$b = 1", "", "a$b"),
        ("", "eval_loss sideways", "eval_loss sideways"),
        ("", "size desc", "'size'"),
    ],
)
def test_malformed_filters_name_the_token(stub, filter, order_by, token):
    with pytest.raises(grpc.RpcError) as err:
        _search(stub, filter, order_by)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert token in err.value.details()


def test_model_card_renders_recorded_facts(register, sources, stub):
    base, data, adapters = _lineage_setup(register, sources)
    best = adapters[2]
    stub.RecordValidationReport(
        registry_pb2.RecordValidationReportRequest(
            report=common_pb2.ValidationReport(
                candidate_id=best.id,
                passed=True,
                score=0.8,
                score_metric="exact_match",
                gates=[common_pb2.GateResult(name="min_score", passed=True, value=0.8)],
            )
        )
    )
    stub.SetAlias(registry_pb2.SetAliasRequest(artifact_id=best.id, alias="champion"))
    card = stub.GetModelCard(registry_pb2.GetModelCardRequest(id="support@champion"))
    facts = json_format.MessageToDict(card.card)
    assert facts["base_model"]["id"] == base.id
    assert facts["dataset"]["digest"] == data.digest
    assert facts["hyperparameters"]["rank"] == 8
    assert facts["metrics"] == {"eval_loss": 0.9}
    assert facts["validation"]["passed"] is True
    assert facts["aliases"] == ["champion"]
    md = card.markdown
    assert md.startswith("# support v3")
    for text in ("smollm2:1", "chat-data:1", "eval_loss", "exact_match", "passed"):
        assert text in md
    base_card = stub.GetModelCard(registry_pb2.GetModelCardRequest(id=base.id))
    assert "used by (base_model): support:1" in base_card.markdown
    assert (
        _code(lambda: stub.GetModelCard(registry_pb2.GetModelCardRequest(id="nope")))
        == grpc.StatusCode.NOT_FOUND
    )


def test_retention_keeps_aliased_deployed_and_parent_versions(
    register, sources, stub, data_dir
):
    versions = _versions(register, sources, 6)
    stub.SetAlias(
        registry_pb2.SetAliasRequest(artifact_id=versions[0].id, alias="production")
    )
    stub.PutDeployment(
        registry_pb2.PutDeploymentRequest(name="bot", model_id=versions[1].id)
    )
    register(
        ADAPTER,
        "child",
        sources.adapter(),
        parents=[common_pb2.ParentRef(artifact_id=versions[2].id)],
    )
    dry = stub.ApplyRetention(
        registry_pb2.ApplyRetentionRequest(name="smol", keep_last=2, dry_run=True)
    )
    assert set(dry.deleted_artifact_ids) == {versions[3].id}
    assert set(dry.kept_artifact_ids) == {v.id for v in versions[:3]}
    done = stub.ApplyRetention(
        registry_pb2.ApplyRetentionRequest(name="smol", keep_last=2)
    )
    assert list(done.deleted_artifact_ids) == [versions[3].id]
    assert (
        _code(
            lambda: stub.GetArtifact(registry_pb2.GetArtifactRequest(id=versions[3].id))
        )
        == grpc.StatusCode.NOT_FOUND
    )
    remaining = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(name="smol"))
    assert len(remaining.artifacts) == 5
    assert (
        _code(
            lambda: stub.ApplyRetention(
                registry_pb2.ApplyRetentionRequest(name="smol", keep_last=0)
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # Garbage collection frees exactly the deleted version's bytes.
    weights = versions[3].files
    kept = stub.CollectGarbage(registry_pb2.CollectGarbageRequest())  # default age
    assert kept.deleted_blobs == 0
    gc = stub.CollectGarbage(registry_pb2.CollectGarbageRequest(min_age_seconds=0))
    assert gc.deleted_blobs == 1 and gc.deleted_version_dirs == 1
    gone = {f.sha256 for f in weights if f.path == "model.safetensors"}
    assert not [
        p for p in (data_dir / "store" / "objects").rglob("*") if p.name in gone
    ]
    for v in (versions[0], versions[4]):
        stub.GetArtifact(registry_pb2.GetArtifactRequest(id=v.id, verify=True))
    actions = [
        e.action
        for e in stub.ListAuditEvents(
            registry_pb2.ListAuditEventsRequest(page_size=2)
        ).events
    ]
    assert actions == ["store.gc", "artifact.delete"]


def test_cli_retention_and_gc(register, sources, server, capsys):
    from services.cli.main import main

    versions = _versions(register, sources, 3)
    assert (
        main(
            [
                "registry",
                "retain",
                "smol",
                "--keep-last",
                "2",
                "--registry",
                server.address,
            ]
        )
        == 0
    )
    assert versions[0].id in capsys.readouterr().out
    assert (
        main(
            [
                "registry",
                "gc",
                "--min-age-seconds",
                "0",
                "--registry",
                server.address,
            ]
        )
        == 0
    )
    assert "deleted 1 blobs" in capsys.readouterr().out
