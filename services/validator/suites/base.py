"""What every validator suite is: checks that each measure one value against
one threshold, folded into a score in [0, 1].

A suite (basic, task, safety, performance; one module each, registered in
`suites.SUITES`) runs against a `Subject` (a loaded model and its tokenizer)
and, where it compares, the base model and the version the target deployment
serves now. Its score is the weighted mean of its checks' scores, except that
a failed *critical* check (the model does not load, emits NaN ...) zeroes the
suite: a model that cannot answer is not 60% good.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Check:
    """One measured value against one threshold."""

    name: str
    passed: bool
    value: float
    threshold: float
    # "min" (value must be >= threshold), "max" (<=) or "bool".
    direction: str
    message: str
    # Contribution to the suite score in [0, 1] (1 when passed unless the
    # check grades partially, e.g. a ratio of a metric to its target).
    score: float = 1.0
    # What to do about it when failed (cleared when passed).
    recommendation: str = ""
    weight: float = 1.0
    critical: bool = False

    def __post_init__(self) -> None:
        if self.passed:
            self.recommendation = ""  # advice is only for what failed


def at_least(
    name: str,
    value: float,
    threshold: float,
    message: str,
    recommendation: str = "",
    **kw: Any,
) -> Check:
    """value >= threshold; partial credit value/threshold below it."""
    return _graded(name, value, threshold, "min", message, recommendation, **kw)


def at_most(
    name: str,
    value: float,
    threshold: float,
    message: str,
    recommendation: str = "",
    **kw: Any,
) -> Check:
    """value <= threshold; partial credit threshold/value above it."""
    return _graded(name, value, threshold, "max", message, recommendation, **kw)


def holds(
    name: str, ok: bool, message: str, recommendation: str = "", **kw: Any
) -> Check:
    """A yes/no check: full credit or none."""
    value = 1.0 if ok else 0.0
    return Check(name, ok, value, 1.0, "bool", message, value, recommendation, **kw)


def _graded(
    name: str,
    value: float,
    threshold: float,
    direction: str,
    message: str,
    recommendation: str,
    *,
    weight: float = 1.0,
    critical: bool = False,
) -> Check:
    at_least = direction == "min"
    finite = math.isfinite(value)
    passed = finite and (value >= threshold if at_least else value <= threshold)
    # The share of the target reached (0 for no measurement, or no scale).
    num, den = (value, threshold) if at_least else (threshold, value)
    score = 1.0 if passed else (num / den if finite and den > 0 else 0.0)
    return Check(
        name,
        passed,
        value,
        threshold,
        direction,
        message,
        max(0.0, min(1.0, score)),
        recommendation,
        weight=weight,
        critical=critical,
    )


@dataclass
class SuiteResult:
    suite: str
    score: float
    checks: list[Check]
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


def fold(suite: str, checks: list[Check], metrics: dict[str, float]) -> SuiteResult:
    """The suite's score: 0 on a failed critical check, else the weighted
    mean of the checks' scores (1.0 for a suite with nothing to check)."""
    if any(c.critical and not c.passed for c in checks):
        score = 0.0
    else:
        total = sum(c.weight for c in checks)
        score = sum(c.score * c.weight for c in checks) / total if total else 1.0
    return SuiteResult(suite, max(0.0, min(1.0, score)), checks, metrics)


@dataclass
class Subject:
    """A loaded model under evaluation: the candidate, the base model or the
    version in production."""

    label: str  # "candidate", "base", "production"
    artifact_id: str
    model: Any
    tokenizer: Any


class Suite(ABC):
    """One evaluation dimension. Implementations hold no state between runs."""

    name: str = ""
    default_weight: float = 0.0

    @abstractmethod
    def run(self, ctx: Any) -> SuiteResult:
        """Measures `ctx.candidate` (and compares where it says so)."""


@dataclass
class SuiteContext:
    """What a suite runs against: the candidate, the base model it was made
    from (the reference for relative checks; None when the candidate is the
    base itself), its thresholds (overrides of each suite's defaults) and
    the evaluation's sample sizes."""

    candidate: Subject
    base: Subject | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    max_new_tokens: int = 48
    seed: int = 42

    def threshold(self, name: str, default: float) -> float:
        return self.thresholds.get(name, default)
