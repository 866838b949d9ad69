"""Simulated canary rollouts: lorafleet's canary policy beside Flagger's.

Both controllers watch a faulty (or healthy) canary in the same simulated
traffic: RATE_PER_S requests a second, each routed to the canary with the
probability of its current weight, each outcome drawn from its arm's
`Behaviour`. The clock is simulated, so an hour of rollouts takes a second.

lorafleet's side is the controller's own decision code (`CanaryPolicy.decide`,
the same function the rollout controller calls), fed the arms' `ArmTotals`
counted exactly as `MetricsRecorder.record` counts them, and looked at once per
simulated second. Flagger's side re-implements its canary scheduler
(pkg/controller/scheduler.go, docs/gitbook/usage/deployment-strategies.md):

* the first run moves the canary from 0 to `stepWeight` without analysis;
* every `interval` the metrics of the last interval are checked; a failed
  check halts advancement and adds one to `failedChecks`, which nothing but a
  new revision resets (a passing check does not);
* rollback once `failedChecks` reaches `threshold`. We roll back at the check
  that reaches it (interval x threshold, the documented formula); the
  scheduler itself tests the counter before the next analysis, one interval
  later, so this errs in Flagger's favour;
* a passing check adds `stepWeight` up to `maxWeight`; a passing check at
  `maxWeight` promotes.

A faulty canary that gets promoted is counted as serving every request from
then until the simulated horizon (it became the stable version).
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, replace
from typing import NamedTuple

from services.gateway.analysis import AnalysisSettings
from services.gateway.metrics import LATENCY_EDGES_MS, ArmTotals
from services.gateway.rollouts.policy import (
    ADVANCE,
    FULL_WEIGHT,
    PROMOTE,
    ROLLBACK,
    CanaryPolicy,
)

RATE_PER_S = 20
HORIZON_S = 1800  # a promoted faulty canary serves all traffic until then
UNDECIDED = "undecided"  # neither rolled back nor promoted by the horizon


@dataclass(frozen=True)
class Behaviour:
    """How an arm answers: error rate, lognormal latency, JSON validity."""

    error_p: float = 0.005
    latency_ms: float = 100.0  # median
    # 0.5 puts a healthy p95 at ~230 ms and a 3x slower one at ~680 ms: Flagger's
    # fixed 500 ms limit then passes the first and fails the second, as a user
    # who picked it for this service would intend.
    latency_sigma: float = 0.5
    invalid_p: float = 0.005  # answers that are not valid JSON
    chars: int = 200


# The stable arm of the faulty-canary runs; Flagger's absolute limits (99%)
# sit comfortably above its 0.5% error and invalid-JSON rates.
BASELINE = Behaviour()
# The healthy canaries of the false-rollback runs (and their stable arm).
HEALTHY = Behaviour(error_p=0.01, invalid_p=0.02)
FAULTS = {
    "errors": {"error_p": 0.20},
    "latency": {"latency_ms": 3 * BASELINE.latency_ms},
    "invalid_json": {"invalid_p": 0.30},
}


class Outcome(NamedTuple):
    error: bool
    latency_ms: float
    invalid_json: bool


@dataclass(frozen=True)
class Result:
    """How a rollout ended, and how many requests its canary served."""

    end: str  # rollback, promote or undecided
    canary_requests: int
    seconds: int


def draw(b: Behaviour, rng: random.Random) -> Outcome:
    """One request's outcome (errors have no answer to check)."""
    if rng.random() < b.error_p:
        return Outcome(True, 0.0, False)
    latency = b.latency_ms * math.exp(rng.gauss(0.0, b.latency_sigma))
    return Outcome(False, latency, rng.random() < b.invalid_p)


def record(totals: ArmTotals, o: Outcome, chars: int) -> None:
    """Counts one request the way MetricsRecorder.record does."""
    totals.requests += 1
    if o.error:
        totals.errors["UNAVAILABLE"] += 1
        return
    index = bisect.bisect_left(LATENCY_EDGES_MS, o.latency_ms)
    totals.buckets[min(index, len(LATENCY_EDGES_MS) - 1)] += 1
    totals.invalid_json += o.invalid_json
    totals.output_chars += chars


def promoted(served: int, now: int, horizon_s: int) -> Result:
    """A promoted canary is the new stable: it serves everything from now on."""
    return Result(PROMOTE, served + max(0, horizon_s - now) * RATE_PER_S, now)


# --- lorafleet ------------------------------------------------------------------


def lorafleet_policy() -> CanaryPolicy:
    """5% -> 25% -> 50%, a minute each, the analysis at its defaults."""
    return CanaryPolicy(
        steps_bps=(500, 2500, 5000), step_interval_s=60.0, analysis=AnalysisSettings()
    )


def run_lorafleet(
    canary: Behaviour,
    rng: random.Random,
    *,
    stable: Behaviour = BASELINE,
    policy: CanaryPolicy | None = None,
    horizon_s: int = HORIZON_S,
) -> Result:
    """One rollout under CanaryPolicy.decide, looked at every simulated second.

    Totals run from the rollout's start (the sequential test uses all the
    evidence); the step's canary requests and elapsed time restart on ADVANCE.
    """
    policy = policy or lorafleet_policy()
    stable_t, canary_t = ArmTotals(), ArmTotals()
    step = step_start = step_requests = 0
    for now in range(1, horizon_s + 1):
        weight = policy.weight(step) / FULL_WEIGHT
        for _ in range(RATE_PER_S):
            if rng.random() < weight:
                record(canary_t, draw(canary, rng), canary.chars)
                step_requests += 1
            else:
                record(stable_t, draw(stable, rng), stable.chars)
        action = policy.decide(
            step, now - step_start, stable_t, canary_t, step_requests
        ).action
        if action == ROLLBACK:
            return Result(ROLLBACK, canary_t.requests, now)
        if action == PROMOTE:
            return promoted(canary_t.requests, now, horizon_s)
        if action == ADVANCE:
            step, step_start, step_requests = step + 1, now, 0
    return Result(UNDECIDED, canary_t.requests, horizon_s)


# --- Flagger --------------------------------------------------------------------


@dataclass(frozen=True)
class FlaggerSettings:
    """A Flagger Canary's analysis; the metric limits as its user would set them."""

    interval_s: int = 60
    threshold: int = 5
    step_weight: int = 10  # percent
    max_weight: int = 50
    min_success_rate: float = 99.0  # percent of requests (builtin metric)
    max_p95_ms: float = 500.0
    min_json_valid: float = 99.0  # percent of answers (a custom metric)


def flagger_check(window: list[Outcome], s: FlaggerSettings) -> bool:
    """The metric checks over one interval's canary requests.

    An empty window fails (Prometheus returns no values, which Flagger treats
    as a failed check). The p95 is the samples' exact nearest-rank value,
    finer than Prometheus' histogram_quantile: again in Flagger's favour.
    """
    if not window:
        return False
    ok = sorted(o.latency_ms for o in window if not o.error)
    success = 100.0 * len(ok) / len(window)
    if not ok:
        return False
    p95 = ok[min(len(ok) - 1, math.ceil(0.95 * len(ok)) - 1)]
    invalid = sum(o.invalid_json for o in window if not o.error)
    valid = 100.0 * (1 - invalid / len(ok))
    return (
        success >= s.min_success_rate
        and p95 <= s.max_p95_ms
        and valid >= s.min_json_valid
    )


def run_flagger(
    canary: Behaviour,
    rng: random.Random,
    *,
    settings: FlaggerSettings | None = None,
    horizon_s: int = HORIZON_S,
) -> Result:
    """One rollout under Flagger's scheduler (see the module docstring).

    Stable's answers are not drawn: Flagger's checks only read the canary's.
    """
    s = settings or FlaggerSettings()
    weight, failed, served = s.step_weight, 0, 0
    for now in range(s.interval_s, horizon_s + 1, s.interval_s):
        share = weight / 100
        window = [
            draw(canary, rng)
            for _ in range(RATE_PER_S * s.interval_s)
            if rng.random() < share
        ]
        served += len(window)
        if not flagger_check(window, s):
            failed += 1  # halts advancement; never reset by a passing check
            if failed >= s.threshold:
                return Result(ROLLBACK, served, now)
        elif weight < s.max_weight:
            weight = min(weight + s.step_weight, s.max_weight)
        else:
            return promoted(served, now, horizon_s)
    return Result(UNDECIDED, served, horizon_s)


# --- the experiments --------------------------------------------------------------


def summarize(results: list[Result]) -> dict:
    """Median and mean canary requests, and how the rollouts ended."""
    served = sorted(r.canary_requests for r in results)
    n = len(served)
    median = (served[(n - 1) // 2] + served[n // 2]) / 2
    ends = {end: 0 for end in (ROLLBACK, PROMOTE, UNDECIDED)}
    for r in results:
        ends[r.end] += 1
    return {
        "median": median,
        "mean": sum(served) / n,
        "ends": ends,
        "median_seconds": sorted(r.seconds for r in results)[(n - 1) // 2],
    }


def bad_canaries(seeds: int, horizon_s: int = HORIZON_S) -> dict:
    """Requests each faulty canary serves before its rollback, both controllers,
    the same seeds (seed i drives both sides' i-th rollout)."""
    out: dict = {"lorafleet": {}, "flagger": {}, "ratio": {}, "details": {}}
    for fault, change in FAULTS.items():
        canary = replace(BASELINE, **change)
        ours = [
            run_lorafleet(canary, random.Random(i), horizon_s=horizon_s)
            for i in range(seeds)
        ]
        theirs = [
            run_flagger(canary, random.Random(i), horizon_s=horizon_s)
            for i in range(seeds)
        ]
        out["lorafleet"][fault] = summarize(ours)
        out["flagger"][fault] = summarize(theirs)
        out["ratio"][fault] = out["lorafleet"][fault]["median"] / max(
            out["flagger"][fault]["median"], 1
        )
        out["details"][fault] = {
            "lorafleet": [(r.end, r.canary_requests, r.seconds) for r in ours],
            "flagger": [(r.end, r.canary_requests, r.seconds) for r in theirs],
        }
    return out


def false_rollbacks(
    n: int, behaviour: Behaviour = HEALTHY, *, flagger: bool = False
) -> dict:
    """Healthy canaries (the same behaviour as stable) run to their end: the
    share rolled back, and how long the rest took to promote."""
    results = []
    for i in range(n):
        rng = random.Random(10_000 + i)
        if flagger:
            results.append(run_flagger(behaviour, rng))
        else:
            results.append(run_lorafleet(behaviour, rng, stable=behaviour))
    summary = summarize(results)
    return {
        "runs": n,
        "rate": summary["ends"][ROLLBACK] / n,
        "ends": summary["ends"],
        "median_seconds": summary["median_seconds"],
    }
