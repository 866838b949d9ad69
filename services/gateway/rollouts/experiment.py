"""A/B test statistics: per-arm success rates with confidence intervals and a
two-proportion test between the arms.

A request succeeds when it was answered without an error and its answer
passed the deployment's online quality checks. The intervals are Wilson
score intervals and the test is the pooled two-proportion z-test, both in
closed form with the standard library (`statistics.NormalDist`); pulling in
SciPy or statsmodels for two formulas would add a large dependency to the
gateway for nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

from services.gateway.analysis import quality_failures
from services.gateway.metrics import ArmTotals


@dataclass(frozen=True)
class ArmResult:
    arm: str
    requests: int
    successes: int
    success_rate: float
    low: float
    high: float
    latency_p50_ms: float
    latency_p95_ms: float
    mean_output_chars: float


@dataclass(frozen=True)
class ExperimentOutcome:
    arms: list[ArmResult] = field(default_factory=list)
    winner: str = ""
    significant: bool = False
    p_value: float = 1.0
    summary: str = ""
    confidence: float = 0.95
    metric: str = "success_rate"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExperimentOutcome:
        arms = [ArmResult(**a) for a in data.get("arms", [])]
        return cls(**{**data, "arms": arms})


def wilson(successes: int, n: int, confidence: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def two_proportion_p(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p-value of "both arms have the same success rate"."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (s1 + s2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance == 0:
        return 1.0  # every request of both arms succeeded (or failed) alike
    z = (s1 / n1 - s2 / n2) / math.sqrt(variance)
    return 2 * (1 - NormalDist().cdf(abs(z)))


def arm_result(arm: str, totals: ArmTotals, confidence: float) -> ArmResult:
    failed = sum(totals.errors.values()) + quality_failures(totals)
    successes = max(0, totals.requests - failed)
    low, high = wilson(successes, totals.requests, confidence)
    return ArmResult(
        arm=arm,
        requests=totals.requests,
        successes=successes,
        success_rate=successes / totals.requests if totals.requests else 0.0,
        low=low,
        high=high,
        latency_p50_ms=totals.percentile_ms(0.50),
        latency_p95_ms=totals.percentile_ms(0.95),
        mean_output_chars=(
            totals.output_chars / totals.successes if totals.successes else 0.0
        ),
    )


def conclude(
    stable: ArmTotals, candidate: ArmTotals, confidence: float, candidate_arm: str
) -> ExperimentOutcome:
    """Compares the arms' success rates at `confidence`."""
    a = arm_result("stable", stable, confidence)
    b = arm_result(candidate_arm, candidate, confidence)
    p = two_proportion_p(a.successes, a.requests, b.successes, b.requests)
    significant = a.requests > 0 and b.requests > 0 and p < 1 - confidence
    winner = ""
    if significant:
        winner = b.arm if b.success_rate > a.success_rate else a.arm
    rates = (
        f"{b.success_rate:.1%} vs {a.success_rate:.1%} over {b.requests} and "
        f"{a.requests} requests"
    )
    if winner == b.arm:
        summary = f"{b.arm} is better: {rates} (p = {p:.3g})"
    elif winner:
        summary = f"{b.arm} is worse: {rates} (p = {p:.3g})"
    else:
        summary = f"no significant difference: {rates} (p = {p:.3g})"
    return ExperimentOutcome(
        arms=[a, b],
        winner=winner,
        significant=significant,
        p_value=p,
        summary=summary,
        confidence=confidence,
    )
