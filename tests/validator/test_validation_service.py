"""The validator over real gRPC: suites by mode, the report's verdict and
comparisons, its storage and model card, the deployment gates, bad input."""

from __future__ import annotations

import json
import math
import shutil

import grpc
import pytest

from lorafleet.v1 import common_pb2, registry_pb2, validator_pb2
from services.common.convert import from_struct
from tests.test_bad_input import expect


def validate(suite, **fields) -> common_pb2.ValidationReport:
    validator = suite.stub("validator")
    fields.setdefault("max_new_tokens", 8)
    fields.setdefault("max_examples", 4)
    job = validator.StartValidationJob(
        validator_pb2.StartValidationJobRequest(**fields), timeout=60
    ).job
    for _ in validator.WatchValidationJob(
        validator_pb2.WatchValidationJobRequest(job_id=job.status.job_id),
        timeout=900,
    ):
        pass
    done = validator.GetValidationJob(
        validator_pb2.GetValidationJobRequest(job_id=job.status.job_id), timeout=30
    ).job
    assert done.status.state == common_pb2.JOB_STATE_SUCCEEDED, done.status.error
    return done.report


@pytest.fixture(scope="module")
def dataset(suite, dataset_copy):
    return (
        suite.stub("registry")
        .RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name="validator-orders",
                source_path=str(dataset_copy),
            ),
            timeout=30,
        )
        .artifact
    )


@pytest.fixture(scope="module")
def nan_model(suite, base_model, tiny_model_dir):
    """A 'merged' model of the tiny base with NaN in one layer."""
    from safetensors.torch import load_file, save_file

    out = suite.config.staging_dir / "nan-merged"
    shutil.copytree(tiny_model_dir, out, dirs_exist_ok=True)
    [weights] = sorted(out.glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(n for n in tensors if "layers.1.mlp.up_proj" in n)
    tensors[name] = tensors[name].clone()
    tensors[name][0, 0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    return (
        suite.stub("registry")
        .RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_MERGED_MODEL,
                name="nan-merged",
                source_path=str(out),
                parents=[
                    common_pb2.ParentRef(
                        artifact_id=base_model.id, relation="base_model"
                    )
                ],
            ),
            timeout=60,
        )
        .artifact
    )


def test_quick_mode_runs_basic_and_task_and_keeps_the_old_fields(
    suite, base_model, dataset
):
    report = validate(
        suite, model_id=base_model.id, dataset_id=dataset.id, mode="quick"
    )
    assert report.mode == "quick"
    assert [s.name for s in report.suites] == ["basic", "task"], report.skipped_suites
    assert sum(report.weights.values()) == pytest.approx(1.0)
    assert report.weights["basic"] == pytest.approx(0.4 / 0.7)
    assert 0.0 <= report.overall_score <= 1.0
    assert report.grade in ("excellent", "good", "fair", "poor")
    # The original fields, read off the suites.
    assert report.candidate.loads and report.candidate.generates
    assert math.isfinite(report.candidate.perplexity)
    assert 0.0 <= report.candidate.exact_match <= 1.0
    assert report.candidate.latency_ms_per_token == 0.0  # no timing in quick
    basic = {c.name: c for c in report.suites[0].checks}
    assert basic["finite_weights"].passed and basic["finite_weights"].critical
    # The candidate is the base: compared with itself, no change.
    [base] = [c for c in report.comparisons if c.target == "base"]
    assert base.model_id == base_model.id and base.overall_delta == 0.0
    assert report.base_model_id == base_model.id


def test_standard_mode_runs_every_suite_and_is_stored_with_the_card(
    suite, base_model, dataset
):
    report = validate(suite, model_id=base_model.id, dataset_id=dataset.id)
    assert report.mode == "standard"
    assert {s.name for s in report.suites} == {"basic", "task", "safety", "performance"}
    safety = next(s for s in report.suites if s.name == "safety")
    # The base judged against itself keeps its own safety behaviour.
    assert safety.score == pytest.approx(1.0)
    assert report.probe_set_id
    probes = (
        suite.stub("registry")
        .GetArtifact(
            registry_pb2.GetArtifactRequest(id=report.probe_set_id), timeout=30
        )
        .artifact
    )
    assert probes.kind == common_pb2.ARTIFACT_KIND_DATASET
    assert report.candidate.latency_ms_per_token > 0
    gates = {g.name: g for g in report.gates}
    assert {"min_overall_score", "min_safety_score"} <= set(gates)
    stored = (
        suite.stub("registry")
        .GetValidationReport(
            registry_pb2.GetValidationReportRequest(id=report.id), timeout=30
        )
        .report
    )
    assert [s.name for s in stored.suites] == [s.name for s in report.suites]
    assert stored.overall_score == pytest.approx(report.overall_score)
    card = suite.stub("registry").GetModelCard(
        registry_pb2.GetModelCardRequest(id=base_model.id), timeout=30
    )
    assert "| safety |" in card.markdown and "Overall" in card.markdown
    facts = from_struct(card.card)
    assert facts["validation"]["grade"] == report.grade


def test_nan_layer_fails_critically_with_its_recommendation_and_blocks_rollout(
    suite, base_model, dataset, nan_model
):
    report = validate(suite, model_id=nan_model.id, dataset_id=dataset.id, mode="quick")
    basic = next(s for s in report.suites if s.name == "basic")
    assert basic.score == 0.0
    finite = next(c for c in basic.checks if c.name == "finite_weights")
    assert not finite.passed and "layers.1.mlp.up_proj.weight" in finite.message
    assert not report.passed
    assert any("NaN/Inf" in r for r in report.recommendations)
    overall = next(g for g in report.gates if g.name == "min_overall_score")
    assert not overall.passed and overall.threshold == pytest.approx(0.8)
    # Its base was found through the lineage and compared.
    assert report.base_model_id == base_model.id
    [base] = [c for c in report.comparisons if c.target == "base"]
    assert base.suite_deltas["basic"] < 0


def test_a_deployment_is_compared_and_its_regression_gated(
    suite, base_model, dataset, nan_model
):
    registry = suite.stub("registry")
    registry.PutDeployment(
        registry_pb2.PutDeploymentRequest(
            name="validator-prod", model_id=base_model.id, reason="test"
        ),
        timeout=30,
    )
    report = validate(
        suite,
        model_id=nan_model.id,
        dataset_id=dataset.id,
        mode="quick",
        deployment="validator-prod",
    )
    assert report.deployment == "validator-prod"
    [prod] = [c for c in report.comparisons if c.target == "production"]
    assert prod.model_id == base_model.id
    regression = next(g for g in report.gates if g.name == "max_regression_basic")
    assert not regression.passed and regression.value > 0.1
    assert "production's" in regression.message


def test_bad_requests_are_refused_and_create_no_job(
    suite, base_model, dataset, other_base_model
):
    validator = suite.stub("validator")

    def jobs() -> int:
        return len(
            validator.ListValidationJobs(
                validator_pb2.ListValidationJobsRequest(page_size=1000), timeout=30
            ).jobs
        )

    before = jobs()
    ok = dict(model_id=base_model.id, dataset_id=dataset.id)
    cases = [
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            dict(mode="thorough"),
            ("known modes: quick, standard, comprehensive",),
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            dict(suites=["basic", "vibes"]),
            ("known suites: basic, performance, safety, task",),
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, dict(weights={"task": -1.0}), (">= 0",)),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            dict(weights={"basic": 0, "task": 0, "safety": 0, "performance": 0}),
            ("sum to 0",),
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            dict(safety_probe_set_id=base_model.id),
            ("probe_set", "safety_probe_set_id"),
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            dict(safety_probe_set_id=dataset.id),
            ("probe_set='safety'",),
        ),
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            dict(baseline_model_id=other_base_model.id),
            ("built on", "would not compare"),
        ),
        (grpc.StatusCode.NOT_FOUND, dict(deployment="no-such-deployment"), ()),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            dict(gates=common_pb2.ValidationGates(min_overall_score=1.5)),
            ("min_overall_score",),
        ),
    ]
    for code, extra, words in cases:
        expect(
            code,
            lambda extra=extra: validator.StartValidationJob(
                validator_pb2.StartValidationJobRequest(**ok, **extra), timeout=30
            ),
            *words,
        )
    assert jobs() == before


@pytest.fixture(scope="module")
def other_base_model(suite, tiny_model_factory):
    from services.cli.models import import_model

    return import_model(
        tiny_model_factory("gpt2"),
        "tiny-gpt2-validator",
        suite.config.staging_dir,
        suite.stub("registry"),
    )


@pytest.fixture(scope="module")
def classifier(suite, base_model, tiny_model_dir):
    """A classification adapter the real trainer made, and its dataset."""
    from tests.common.classifier_adapter import (
        ROWS,
        register_adapter,
        train_classifier,
    )

    out = suite.config.staging_dir / "validator-classifier"
    meta = train_classifier(tiny_model_dir, out)
    adapter = register_adapter(
        suite.stub("registry"), base_model, out, "validator-classifier", meta
    )
    rows = suite.config.staging_dir / "validator-classes.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))
    dataset = (
        suite.stub("registry")
        .RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name="validator-classes",
                source_path=str(rows),
            ),
            timeout=30,
        )
        .artifact
    )
    return adapter, dataset


def test_a_classification_adapter_is_validated_as_a_classifier(
    suite, base_model, classifier
):
    adapter, dataset = classifier
    report = validate(
        suite,
        model_id=base_model.id,
        adapter_id=adapter.id,
        dataset_id=dataset.id,
        eval_fraction=0.25,
        max_examples=12,
    )
    assert [s.name for s in report.suites] == ["basic", "task"]
    # It has no answers for the probes and no tokens to time: said, not hidden.
    assert "safety" in report.skipped_suites
    assert "performance" in report.skipped_suites
    assert report.weights["basic"] == pytest.approx(0.4 / 0.7)
    basic = {c.name: c for c in report.suites[0].checks}
    assert basic["classifies"].passed and "generates" not in basic
    task = report.suites[1]
    assert 0.0 <= task.metrics["accuracy"] <= 1.0
    assert 0.0 <= task.metrics["macro_f1"] <= 1.0
    assert task.metrics["majority_rate"] == pytest.approx(0.5)
    names = [s.prompt for s in report.candidate.samples]
    assert names and all(
        s.output in ("lamps", "socks") for s in report.candidate.samples
    )


def test_the_same_inputs_give_the_same_report(suite, base_model, dataset):
    """Seeded sampling and greedy decoding: everything but the timings."""

    def verdict(report):
        return (
            report.overall_score,
            report.grade,
            list(report.recommendations),
            [
                (
                    s.name,
                    s.score,
                    dict(s.metrics),
                    [(c.name, c.value) for c in s.checks],
                )
                for s in report.suites
            ],
        )

    request = dict(
        model_id=base_model.id,
        dataset_id=dataset.id,
        suites=["basic", "task", "safety"],
        max_examples=6,
    )
    first, again = validate(suite, **request), validate(suite, **request)
    assert first.id != again.id
    assert verdict(first) == verdict(again)


def test_without_the_task_suite_no_gate_reads_its_measurements(
    suite, base_model, dataset
):
    report = validate(
        suite, model_id=base_model.id, dataset_id=dataset.id, suites=["basic"]
    )
    names = {g.name for g in report.gates}
    assert "finite_perplexity" not in names and "min_score" not in names
    assert "min_overall_score" in names
    assert report.passed, [g.message for g in report.gates if not g.passed]
