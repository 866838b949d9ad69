"""protobuf <-> validator domain: requests to specs, outcomes to reports."""

from __future__ import annotations

import math

from lorafleet.v1 import common_pb2, validator_pb2
from services.common.convert import job_status_to_pb, timestamp
from services.common.gates import gates_from_pb, gates_to_pb
from services.common.jobs import Job
from services.validator.assessment import ComparisonResult
from services.validator.evaluation import ModelScores
from services.validator.spec import (
    ResolvedValidation,
    ValidationOutcome,
    ValidationSpec,
)
from services.validator.suites.base import SuiteResult


def spec_from_pb(req: validator_pb2.StartValidationJobRequest) -> ValidationSpec:
    d = ValidationSpec(model_id="")
    return ValidationSpec(
        model_id=req.model_id,
        adapter_id=req.adapter_id,
        baseline_model_id=req.baseline_model_id,
        dataset_id=req.dataset_id,
        gates=gates_from_pb(req.gates),
        max_examples=req.max_examples,
        max_new_tokens=req.max_new_tokens or d.max_new_tokens,
        eval_fraction=req.eval_fraction or d.eval_fraction,
        seed=req.seed or d.seed,
        mode=req.mode or d.mode,
        suites=list(req.suites),
        weights=dict(req.weights),
        thresholds=dict(req.thresholds),
        deployment=req.deployment,
        safety_probe_set_id=req.safety_probe_set_id,
        grade_bounds=[(g.grade, g.min_score) for g in req.grade_bounds],
    )


def scores_to_pb(s: ModelScores) -> common_pb2.ModelScores:
    return common_pb2.ModelScores(
        model_id=s.model_id,
        perplexity=s.perplexity,
        exact_match=s.exact_match,
        latency_ms_per_token=s.latency_ms_per_token,
        latency_ms_per_request=s.latency_ms_per_request,
        examples=s.examples,
        loads=s.loads,
        generates=s.generates,
        samples=[
            common_pb2.SampleGeneration(prompt=p, output=o, reference=r)
            for p, o, r in s.samples
        ],
    )


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """Protobuf JSON would carry NaN, but a report is for people and gates:
    an unmeasured metric is left out rather than written as NaN."""
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def suite_to_pb(r: SuiteResult, weight: float) -> common_pb2.SuiteReport:
    return common_pb2.SuiteReport(
        name=r.suite,
        score=r.score,
        weight=weight,
        passed=r.passed,
        metrics=_finite(r.metrics),
        checks=[
            common_pb2.CheckResult(
                name=c.name,
                passed=c.passed,
                value=c.value,
                threshold=c.threshold,
                direction=c.direction,
                message=c.message,
                score=c.score,
                weight=c.weight,
                critical=c.critical,
                recommendation=c.recommendation,
            )
            for c in r.checks
        ],
    )


def comparison_to_pb(c: ComparisonResult) -> common_pb2.Comparison:
    return common_pb2.Comparison(
        target=c.target,
        model_id=c.model_id,
        adapter_id=c.adapter_id,
        overall_score=c.overall,
        suite_scores=c.suite_scores,
        suite_deltas=c.suite_deltas,
        overall_delta=c.overall_delta,
        task_metric=c.task_metric,
        task_value=c.task_value if math.isfinite(c.task_value) else 0.0,
        task_improvement=(
            0.0 if math.isnan(c.task_improvement) else c.task_improvement
        ),
        meets_task_bar=c.meets_task_bar,
    )


def report_to_pb(
    job: ResolvedValidation, o: ValidationOutcome
) -> common_pb2.ValidationReport:
    report = common_pb2.ValidationReport(
        id=o.report_id,
        candidate_id=o.candidate_id,
        baseline_id=job.baseline.id if job.baseline else "",
        dataset_id=job.dataset.id,
        candidate=scores_to_pb(o.candidate),
        score=o.score,
        score_metric=o.score_metric,
        passed=o.passed,
        create_time=timestamp(o.create_time),
        gates=[
            common_pb2.GateResult(
                name=g.name,
                passed=g.passed,
                value=g.value,
                threshold=g.threshold,
                message=g.message,
            )
            for g in o.gates
        ],
        mode=o.mode,
        suites=[suite_to_pb(r, o.weights.get(r.suite, 0.0)) for r in o.suites],
        overall_score=o.overall,
        grade=o.grade,
        recommendations=o.recommendations,
        comparisons=[comparison_to_pb(c) for c in o.comparisons],
        weights=o.weights,
        grade_bounds=[
            common_pb2.GradeBound(grade=g, min_score=b) for g, b in o.grade_bounds
        ],
        deployment=job.spec.deployment,
        probe_set_id=job.probe_set.id if job.probe_set is not None else "",
        base_model_id=job.base.id if job.base is not None else "",
        skipped_suites=o.skipped,
    )
    if o.baseline is not None:
        report.baseline.CopyFrom(scores_to_pb(o.baseline))
    return report


def job_to_pb(job: Job) -> validator_pb2.ValidationJob:
    resolved: ResolvedValidation = job.spec
    s = resolved.spec
    pb = validator_pb2.ValidationJob(
        status=job_status_to_pb(job),
        request=validator_pb2.StartValidationJobRequest(
            model_id=s.model_id,
            adapter_id=s.adapter_id,
            baseline_model_id=s.baseline_model_id,
            dataset_id=s.dataset_id,
            gates=gates_to_pb(s.gates, common_pb2.ValidationGates),
            max_examples=s.max_examples,
            max_new_tokens=s.max_new_tokens,
            eval_fraction=s.eval_fraction,
            seed=s.seed,
            request_id=job.request_id,
            mode=s.mode,
            suites=s.suites,
            weights=s.weights,
            thresholds=s.thresholds,
            deployment=s.deployment,
            safety_probe_set_id=s.safety_probe_set_id,
            grade_bounds=[
                common_pb2.GradeBound(grade=g, min_score=b) for g, b in s.grade_bounds
            ],
        ),
        attempt=job.attempt,
        worker_id=job.worker_id,
    )
    if job.result is not None:
        pb.report.CopyFrom(report_to_pb(resolved, job.result))
    return pb
