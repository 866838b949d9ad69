"""Lineage walks, alias compare-and-set and validation reports."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import select

from lorafleet.v1 import common_pb2, registry_pb2
from services.registry.db import AliasEventRow, make_engine

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
DATASET = common_pb2.ARTIFACT_KIND_DATASET
ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER
MERGED_MODEL = common_pb2.ARTIFACT_KIND_MERGED_MODEL


def _rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value


@pytest.fixture
def family(register, sources):
    """base + dataset -> adapter -> merged, plus an unrelated model."""
    base = register(BASE_MODEL, "base", sources.model("base")).artifact
    data = register(DATASET, "chats", sources.dataset()).artifact
    adapter = register(
        ADAPTER,
        "lora",
        sources.adapter(),
        parents=[
            common_pb2.ParentRef(artifact_id=base.id, relation="base_model"),
            common_pb2.ParentRef(artifact_id="chats:1"),
        ],
    ).artifact
    merged = register(
        MERGED_MODEL,
        "merged",
        sources.model("merged", weights=b"m"),
        parents=[
            common_pb2.ParentRef(artifact_id=base.id),
            common_pb2.ParentRef(artifact_id=adapter.id, relation="adapter"),
        ],
    ).artifact
    other = register(BASE_MODEL, "other", sources.model("other", b"o")).artifact
    return {
        "base": base,
        "data": data,
        "adapter": adapter,
        "merged": merged,
        "other": other,
    }


def _lineage(stub, ref):
    resp = stub.GetLineage(registry_pb2.GetLineageRequest(id=ref))
    edges = {(e.parent_id, e.child_id, e.relation) for e in resp.edges}
    return [a.id for a in resp.artifacts], edges


def test_lineage_walks_up_and_down(stub, family):
    f = family
    ids, edges = _lineage(stub, f["adapter"].id)
    assert ids[0] == f["adapter"].id
    assert set(ids) == {f["adapter"].id, f["base"].id, f["data"].id, f["merged"].id}
    assert edges == {
        (f["base"].id, f["adapter"].id, "base_model"),
        (f["data"].id, f["adapter"].id, "dataset"),  # relation from the parent kind
        (f["adapter"].id, f["merged"].id, "adapter"),
        (f["base"].id, f["merged"].id, "base_model"),
    }
    # From the dataset: only its descendants; the base is a sibling ancestor.
    ids, edges = _lineage(stub, "chats")
    assert ids == [f["data"].id, f["adapter"].id, f["merged"].id]
    assert edges == {
        (f["data"].id, f["adapter"].id, "dataset"),
        (f["adapter"].id, f["merged"].id, "adapter"),
    }
    ids, edges = _lineage(stub, f["other"].id)
    assert ids == [f["other"].id] and edges == set()
    err = _rpc_error(stub.GetLineage, registry_pb2.GetLineageRequest(id="a" * 32))
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_alias_compare_and_set(register, sources, stub, config):
    v1 = register(BASE_MODEL, "smol", sources.model(weights=b"1")).artifact
    v2 = register(BASE_MODEL, "smol", sources.model(weights=b"2")).artifact

    def set_alias(artifact_id, **kw):
        return stub.SetAlias(
            registry_pb2.SetAliasRequest(artifact_id=artifact_id, alias="prod", **kw)
        )

    created = set_alias(v1.id, expected_artifact_id="", reason="first")
    assert created.previous_artifact_id == "" and list(created.artifact.aliases) == [
        "prod"
    ]
    exists = _rpc_error(
        stub.SetAlias,
        registry_pb2.SetAliasRequest(
            artifact_id=v2.id, alias="prod", expected_artifact_id=""
        ),
    )
    assert exists.code() == grpc.StatusCode.ABORTED and v1.id in exists.details()
    stale = _rpc_error(
        stub.SetAlias,
        registry_pb2.SetAliasRequest(
            artifact_id=v2.id, alias="prod", expected_artifact_id=v2.id
        ),
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    moved = set_alias(v2.id, expected_artifact_id=v1.id, reason="promote")
    assert moved.previous_artifact_id == v1.id and moved.artifact.id == v2.id
    unconditional = set_alias(v1.id, reason="rollback")
    assert unconditional.previous_artifact_id == v2.id
    resolved = stub.ResolveAlias(
        registry_pb2.ResolveAliasRequest(name="smol", alias="prod")
    )
    assert resolved.artifact.id == v1.id
    engine = make_engine(config.effective_registry_dsn)
    try:
        with engine.connect() as conn:
            history = conn.execute(
                select(
                    AliasEventRow.from_id, AliasEventRow.to_id, AliasEventRow.reason
                ).order_by(AliasEventRow.id)
            ).all()
    finally:
        engine.dispose()
    assert [tuple(h) for h in history] == [
        (None, v1.id, "first"),
        (v1.id, v2.id, "promote"),
        (v2.id, v1.id, "rollback"),
    ]


@pytest.mark.parametrize("alias", ["Prod", "1st", "", "a b", "x" * 64])
def test_alias_must_be_a_lower_case_identifier(register, sources, stub, alias):
    a = register(BASE_MODEL, "smol", sources.model()).artifact
    err = _rpc_error(
        stub.SetAlias, registry_pb2.SetAliasRequest(artifact_id=a.id, alias=alias)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "alias" in err.details()


def test_alias_errors_for_unknown_things(register, sources, stub):
    register(BASE_MODEL, "smol", sources.model())
    err = _rpc_error(
        stub.SetAlias, registry_pb2.SetAliasRequest(artifact_id="e" * 32, alias="prod")
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND and "e" * 32 in err.details()
    err = _rpc_error(
        stub.ResolveAlias, registry_pb2.ResolveAliasRequest(name="smol", alias="prod")
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND and "prod" in err.details()


def test_validation_reports_round_trip(stub, family):
    f = family
    report = common_pb2.ValidationReport(
        candidate_id=f["merged"].id,
        baseline_id="base:1",
        dataset_id=f["data"].id,
        score=0.75,
        score_metric="exact_match",
        passed=True,
        candidate=common_pb2.ModelScores(
            model_id=f["merged"].id, perplexity=3.5, examples=10, loads=True
        ),
        gates=[
            common_pb2.GateResult(
                name="min_score", passed=True, value=0.75, threshold=0.5
            )
        ],
    )
    saved = stub.RecordValidationReport(
        registry_pb2.RecordValidationReportRequest(report=report)
    ).report
    assert len(saved.id) == 32 and saved.baseline_id == f["base"].id
    assert saved.create_time.seconds > 0
    got = stub.GetValidationReport(
        registry_pb2.GetValidationReportRequest(id=saved.id)
    ).report
    assert got == saved
    assert got.candidate.perplexity == 3.5 and got.gates[0].threshold == 0.5
    second = stub.RecordValidationReport(
        registry_pb2.RecordValidationReportRequest(
            report=common_pb2.ValidationReport(candidate_id=f["adapter"].id)
        )
    ).report
    listed = stub.ListValidationReports(registry_pb2.ListValidationReportsRequest())
    assert [r.id for r in listed.reports] == [second.id, saved.id]  # newest first
    mine = stub.ListValidationReports(
        registry_pb2.ListValidationReportsRequest(candidate_id=f["merged"].id)
    )
    assert [r.id for r in mine.reports] == [saved.id]
    page = stub.ListValidationReports(
        registry_pb2.ListValidationReportsRequest(page_size=1)
    )
    assert len(page.reports) == 1 and page.next_page_token


@pytest.mark.parametrize("field", ["candidate_id", "baseline_id", "dataset_id"])
def test_validation_report_with_unknown_artifact_is_not_found(stub, family, field):
    fields = {"candidate_id": family["merged"].id, field: "d" * 32}
    err = _rpc_error(
        stub.RecordValidationReport,
        registry_pb2.RecordValidationReportRequest(
            report=common_pb2.ValidationReport(**fields)
        ),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND and field in err.details()
    err = _rpc_error(
        stub.GetValidationReport, registry_pb2.GetValidationReportRequest(id="d" * 32)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
