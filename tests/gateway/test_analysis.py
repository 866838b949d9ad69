"""Canary analysis on simulated traffic: healthy canaries are almost never
rolled back, however often they are checked; bad ones are stopped fast."""

from __future__ import annotations

import bisect
import math
import random

import pytest

from services.common.errors import InvalidArgument
from services.gateway.analysis import (
    FAIL,
    PASS,
    AnalysisSettings,
    analyze,
    mixture_ratio,
)
from services.gateway.metrics import LATENCY_EDGES_MS, ArmTotals


def serve(
    totals: ArmTotals,
    rng: random.Random,
    *,
    error_p: float = 0.005,
    latency_ms: float = 80.0,
    invalid_p: float = 0.01,
) -> None:
    """One request, counted the way MetricsRecorder.record counts it."""
    totals.requests += 1
    if rng.random() < error_p:
        totals.errors["UNAVAILABLE"] += 1
        return
    latency = latency_ms * math.exp(rng.gauss(0.0, 0.3))
    index = bisect.bisect_left(LATENCY_EDGES_MS, latency)
    totals.buckets[min(index, len(LATENCY_EDGES_MS) - 1)] += 1
    totals.invalid_json += rng.random() < invalid_p
    totals.output_chars += 40


STEPS = 5


def run_canary(
    rng: random.Random, settings: AnalysisSettings, **fault
) -> tuple[str, int]:
    """A canary at 10% beside stable for STEPS steps of min_requests each,
    analysed after every canary request (the most a controller could look) and
    at each step's end; (decision, canary requests served)."""
    stable, canary = ArmTotals(), ArmTotals()
    for _ in range(300):  # stable's history before the canary starts
        serve(stable, rng)
    for step in range(1, STEPS + 1):
        for _ in range(settings.min_requests):
            for _ in range(9):
                serve(stable, rng)
            serve(canary, rng, **fault)
            done = canary.requests == step * settings.min_requests
            verdict = analyze(stable, canary, settings, step_done=done)
            if verdict.decision == FAIL:
                return FAIL, canary.requests
    return PASS, canary.requests


def test_healthy_canaries_are_rarely_rolled_back():
    settings = AnalysisSettings()
    rng = random.Random(7)
    outcomes = [run_canary(rng, settings)[0] for _ in range(300)]
    false_rollbacks = outcomes.count(FAIL) / len(outcomes)
    assert false_rollbacks <= settings.false_rollback_rate


@pytest.mark.parametrize(
    ("fault", "within"),
    [
        ({"error_p": 0.20}, 40),
        ({"latency_ms": 240.0}, 20),
        ({"invalid_p": 0.30}, 40),
    ],
)
def test_bad_canaries_are_stopped_after_few_requests(fault, within):
    settings = AnalysisSettings()
    served = []
    for seed in range(20):
        decision, n = run_canary(random.Random(seed), settings, **fault)
        assert decision == FAIL, (fault, seed)
        served.append(n)
    # Median canary requests served before the rollback: a step or two.
    assert sorted(served)[len(served) // 2] <= within, served


def test_thresholds_decide_once_a_step_has_enough_requests():
    rng = random.Random(3)
    stable, canary = ArmTotals(), ArmTotals()
    for _ in range(200):
        serve(stable, rng)
    settings = AnalysisSettings(min_requests=30, max_length_ratio=1.5)
    for _ in range(29):
        serve(canary, rng)
    assert analyze(stable, canary, settings, step_done=True).decision == "continue"
    serve(canary, rng)
    assert analyze(stable, canary, settings).decision == "continue"  # step runs
    verdict = analyze(stable, canary, settings, step_done=True)
    assert verdict.decision == PASS, verdict.reason
    assert {c.name for c in verdict.checks} == {
        "error_rate",
        "p95_latency_ratio",
        "quality",
        "length_ratio",
    }
    canary.output_chars *= 2  # answers twice as long as stable's
    verdict = analyze(stable, canary, settings, step_done=True)
    assert verdict.decision == FAIL and "length_ratio 2" in verdict.reason


def test_the_evidence_grows_only_with_a_worse_rate():
    assert mixture_ratio(0, 0, 0.05) == 1.0
    assert mixture_ratio(0, 100, 0.05) < 0.1  # fewer than baseline: against
    assert mixture_ratio(5, 100, 0.05) < 1.0
    assert mixture_ratio(30, 100, 0.05) > 1e6
    # One bad request out of one is not enough evidence at any rate.
    assert mixture_ratio(1, 1, 0.02) < 100


def test_settings_out_of_range_are_refused():
    with pytest.raises(InvalidArgument, match="analysis.false_rollback_rate"):
        AnalysisSettings(false_rollback_rate=0.9).check()
    with pytest.raises(InvalidArgument, match="analysis.min_requests"):
        AnalysisSettings(min_requests=0).check()
    AnalysisSettings().check()
