"""The report's original per-model fields (lorafleet.v1.ModelScores), read
off the suites' measurements so that clients and gates built on them keep
working: perplexity and exact match from the task suite, latency from the
performance suite, loads/generates from the basic suite.
"""

from __future__ import annotations

import math

from services.validator.evaluation import LATENCY_TOKENS, ModelScores
from services.validator.report import Verdict
from services.validator.suites.base import SuiteContext


def legacy_scores(
    model_id: str,
    verdict: Verdict | None,
    ctx: SuiteContext,
    label: str,
    broken: dict[str, str],
) -> ModelScores:
    if label in broken or verdict is None:
        return ModelScores(
            model_id=model_id,
            loads=False,
            samples=[("", f"load failed: {broken.get(label, '?')}", "")],
        )
    basic = verdict.suites.get("basic")
    task = verdict.suites.get("task")
    perf = verdict.suites.get("performance")
    checks = {c.name: c for c in basic.checks} if basic else {}
    generates = checks.get("generates")
    scores = ModelScores(
        model_id=model_id,
        loads="loads" not in checks or checks["loads"].passed,
        generates=bool(generates.passed) if generates is not None else True,
        examples=len(ctx.examples),
    )
    if task is not None:
        scores.perplexity = task.metrics.get("perplexity", math.nan)
        scores.exact_match = task.metrics.get("exact_match", -1.0)
        scores.samples = [tuple(s) for s in ctx.cache.get(f"{label}:task_samples", [])]
    if perf is not None and perf.metrics.get("ms_per_token", 0) > 0:
        scores.latency_ms_per_token = perf.metrics["ms_per_token"]
        scores.latency_ms_per_request = scores.latency_ms_per_token * LATENCY_TOKENS
    return scores


def primary_metric_of(ctx: SuiteContext) -> str:
    """The task's primary metric name ("" before the task suite exists)."""
    try:
        from services.validator.suites.task import primary_metric
    except ImportError:
        return ""
    return primary_metric(ctx.task, ctx.examples)
