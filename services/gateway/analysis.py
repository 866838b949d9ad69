"""Canary analysis: is the candidate arm worse than the stable one?

The evidence is the per-arm totals the gateway records (requests, errors, a
latency histogram, online quality checks). Two kinds of test, sharing one
false-rollback budget (`false_rollback_rate`, the chance of rolling back a
healthy canary over a whole rollout):

* A sequential test, run after every look at the metrics, may stop a clearly
  bad canary after a few requests. For each kind of bad request (an error; a
  latency above the stable arm's p95; a failed quality check) it tests "the
  canary's rate is at most the stable arm's plus `tolerance`" with a mixture
  likelihood ratio over worse rates. Under that hypothesis the ratio is a
  non-negative supermartingale, so by Ville's inequality it ever reaches
  1/alpha with probability at most alpha, however often it is looked at
  (the idea of Johari, Pekelis & Walsh's "always valid" mSPRT, here exact for
  Bernoulli outcomes instead of a normal approximation). Half of the budget.
* Thresholds, decided at the end of a step (enough requests, interval over):
  error rate at most `max_error_rate`, p95 latency at most
  `max_latency_ratio` times stable's, answers passing the quality checks at
  least `min_quality`, mean answer length within `max_length_ratio` of
  stable's. A rate threshold fails only when the canary is beyond it with
  confidence (a Wilson bound), so noise in a 20-request step does not roll a
  healthy canary back. The other half of the budget, spread over up to
  `MAX_STEPS` steps and the rate checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from services.common.errors import InvalidArgument
from services.gateway.metrics import LATENCY_EDGES_MS, ArmTotals

CONTINUE, PASS, FAIL = "continue", "pass", "fail"
# Steps of a rollout the thresholds' share of the budget is spread over.
MAX_STEPS = 10
# The worse rates the sequential test mixes over: the baseline plus these.
MIXTURE_GAPS = (0.02, 0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True)
class AnalysisSettings:
    """Thresholds and the error budget (defaults in brackets)."""

    max_error_rate: float = 0.05  # canary errors / requests [5%]
    max_latency_ratio: float = 1.5  # canary p95 / stable p95 [1.5]
    min_quality: float = 0.95  # answers passing the quality checks [95%]
    max_length_ratio: float = 3.0  # mean answer length vs stable, either way [3]
    min_requests: int = 20  # canary requests before a step can pass [20]
    false_rollback_rate: float = 0.01  # of a healthy canary, per rollout [1%]
    tolerance: float = 0.02  # extra bad-request rate allowed over stable [2 points]

    def check(self, prefix: str = "analysis") -> None:
        rules = (
            ("max_error_rate", 0.0, 1.0),
            ("min_quality", 0.0, 1.0),
            ("false_rollback_rate", 1e-6, 0.5),
            ("tolerance", 0.0, 0.5),
            ("max_latency_ratio", 1.0, 100.0),
            ("max_length_ratio", 1.0, 100.0),
        )
        for name, low, high in rules:
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise InvalidArgument(
                    f"{prefix}.{name} must be in [{low:g}, {high:g}], got {value}",
                    field=f"{prefix}.{name}",
                )
        if not 1 <= self.min_requests <= 1_000_000:
            raise InvalidArgument(
                f"{prefix}.min_requests must be in [1, 1000000], got "
                f"{self.min_requests}",
                field=f"{prefix}.min_requests",
            )


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    threshold: float
    passed: bool


@dataclass(frozen=True)
class Verdict:
    decision: str  # continue, pass or fail
    reason: str
    canary_requests: int
    checks: list[Check] = field(default_factory=list)


def mixture_ratio(bad: int, n: int, baseline: float) -> float:
    """Evidence that a rate is above `baseline` after `bad` of `n`.

    The average, over rates baseline + MIXTURE_GAPS, of the likelihood ratio of
    that rate to the baseline. Only worse rates are mixed, which keeps it a
    supermartingale under every rate at or below the baseline.
    """
    base = min(max(baseline, 1e-6), 1 - 1e-6)
    total = 0.0
    gaps = [g for g in MIXTURE_GAPS if base + g < 1]
    for gap in gaps:
        worse = base + gap
        log_ratio = bad * math.log(worse / base) + (n - bad) * math.log(
            (1 - worse) / (1 - base)
        )
        total += math.exp(min(log_ratio, 700.0))
    return total / len(gaps) if gaps else 0.0


def wilson_lower(bad: int, n: int, z: float) -> float:
    """Lower Wilson score bound of a rate."""
    if n == 0:
        return 0.0
    p = bad / n
    center = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (center - spread) / (1 + z * z / n))


def slower_than(totals: ArmTotals, limit_ms: float) -> int:
    """Successful requests in latency buckets wholly above `limit_ms` (a
    conservative count from the histogram)."""
    slow, low = 0, 0.0
    for edge, count in zip(LATENCY_EDGES_MS, totals.buckets, strict=True):
        if low >= limit_ms:
            slow += count
        low = edge
    return slow


def quality_failures(totals: ArmTotals) -> int:
    """Answers failing an online check (each answer counted once at most)."""
    failing = totals.empty_outputs + totals.invalid_json + totals.blocked_outputs
    return min(failing, totals.successes)


def analyze(
    stable: ArmTotals,
    canary: ArmTotals,
    settings: AnalysisSettings,
    *,
    step_done: bool = False,
) -> Verdict:
    """Compares the canary with stable over the same stretch of time.

    `step_done`: the controller's step is over (its interval has passed);
    the thresholds then decide, once the canary has `min_requests`.
    """
    n = canary.requests
    verdict = _sequential(stable, canary, settings)
    if verdict is not None:
        return verdict
    if not step_done or n < settings.min_requests:
        return Verdict(
            CONTINUE, f"{n} canary requests so far (need {settings.min_requests})", n
        )
    checks = _thresholds(stable, canary, settings)
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(
            f"{c.name} {c.value:.3g} vs limit {c.threshold:.3g}" for c in failed
        )
        return Verdict(FAIL, reason, n, checks)
    return Verdict(PASS, f"every check passed over {n} canary requests", n, checks)


def _sequential(
    stable: ArmTotals, canary: ArmTotals, settings: AnalysisSettings
) -> Verdict | None:
    alpha = settings.false_rollback_rate / 2 / 3  # half the budget, three tests
    stable_p95 = stable.percentile_ms(0.95)
    tests = [
        (
            "error",
            sum(canary.errors.values()),
            canary.requests,
            _rate(sum(stable.errors.values()), stable.requests),
        ),
        (
            "quality",
            quality_failures(canary),
            canary.successes,
            _rate(quality_failures(stable), stable.successes),
        ),
    ]
    if stable.successes:
        # By definition about 5% of stable's own requests are slower than its p95.
        tests.append(("slow", slower_than(canary, stable_p95), canary.successes, 0.05))
    for name, bad, trials, stable_rate in tests:
        baseline = stable_rate + settings.tolerance
        ratio = mixture_ratio(bad, trials, baseline)
        if ratio >= 1 / alpha:
            return Verdict(
                FAIL,
                f"{name} rate {bad}/{trials} ({_rate(bad, trials):.1%}) is above "
                f"stable's {stable_rate:.1%} + {settings.tolerance:.0%} (sequential "
                f"test: evidence {ratio:.0f} >= {1 / alpha:.0f})",
                canary.requests,
            )
    return None


def _thresholds(
    stable: ArmTotals, canary: ArmTotals, settings: AnalysisSettings
) -> list[Check]:
    # Half the budget over MAX_STEPS steps and three rate checks, one-sided.
    alpha = settings.false_rollback_rate / 2 / MAX_STEPS / 3
    z = NormalDist().inv_cdf(1 - alpha)
    n, ok = canary.requests, canary.successes
    errors = sum(canary.errors.values())
    checks = [
        Check(
            "error_rate",
            _rate(errors, n),
            settings.max_error_rate,
            wilson_lower(errors, n, z) <= settings.max_error_rate,
        )
    ]
    if ok and stable.successes:
        # p95 above ratio x stable's p95 <=> over 5% of requests slower than that.
        limit = settings.max_latency_ratio * stable.percentile_ms(0.95)
        ratio = canary.percentile_ms(0.95) / max(stable.percentile_ms(0.95), 1e-9)
        slow = slower_than(canary, limit)
        checks.append(
            Check(
                "p95_latency_ratio",
                ratio,
                settings.max_latency_ratio,
                wilson_lower(slow, ok, z) <= 0.05,
            )
        )
    if ok:
        failures = quality_failures(canary)
        checks.append(
            Check(
                "quality",
                1 - _rate(failures, ok),
                settings.min_quality,
                wilson_lower(failures, ok, z) <= 1 - settings.min_quality,
            )
        )
    if ok and stable.successes and stable.output_chars and canary.output_chars:
        length = (canary.output_chars / ok) / (stable.output_chars / stable.successes)
        checks.append(
            Check(
                "length_ratio",
                length,
                settings.max_length_ratio,
                max(length, 1 / length) <= settings.max_length_ratio,
            )
        )
    return checks


def _rate(bad: int, n: int) -> float:
    return bad / n if n else 0.0
