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

import dataclasses
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
    # "causal" (a language model that generates) or "classifier" (a sequence
    # classification head over the base: it scores labels, never generates).
    kind: str = "causal"
    # A classifier's labels in class-id order.
    labels: list[str] = field(default_factory=list)

    @property
    def generates(self) -> bool:
        return self.kind == "causal"


class Suite(ABC):
    """One evaluation dimension. Implementations hold no state between runs."""

    name: str = ""
    default_weight: float = 0.0

    def applies_to(self, ctx: SuiteContext) -> str:
        """Why this suite cannot judge `ctx.candidate` ("" when it can): a
        classifier has no answers for the safety probes, say. A suite that
        does not apply is left out and the weights renormalised."""
        return ""

    def measure(self, subjects: list[Subject], ctx: SuiteContext) -> None:  # noqa: B027
        """Measurements that must be taken across all subjects at once
        (timing in turn, so machine load hits each alike), stored under
        `ctx.shared[self.name]`. Called once before `run`; most suites
        measure each subject alone in `run` and leave this empty."""

    @abstractmethod
    def run(self, ctx: SuiteContext) -> SuiteResult:
        """Measures `ctx.candidate` (and compares where it says so)."""


# Sample sizes per mode: how much of the held-out split the task suite scores,
# how many safety probes per category, how many timing rounds.
@dataclass(frozen=True)
class Sizes:
    task_examples: int
    probes_per_category: int
    timing_rounds: int
    confidence_intervals: bool = False


MODES: dict[str, Sizes] = {
    # basic + a small task sample, seconds on a small model
    "quick": Sizes(task_examples=8, probes_per_category=0, timing_rounds=0),
    "standard": Sizes(task_examples=32, probes_per_category=8, timing_rounds=3),
    # larger samples, every probe, repeated timing with confidence intervals
    "comprehensive": Sizes(
        task_examples=128,
        probes_per_category=1000,
        timing_rounds=7,
        confidence_intervals=True,
    ),
}
# The suites each mode runs by default (a request may name its own).
MODE_SUITES: dict[str, tuple[str, ...]] = {
    "quick": ("basic", "task"),
    "standard": ("basic", "task", "safety", "performance"),
    "comprehensive": ("basic", "task", "safety", "performance"),
}


@dataclass
class SuiteContext:
    """What a suite runs against: the candidate, the base model it was made
    from (the reference for relative checks; the candidate itself when it is
    a base model), its thresholds (overrides of each suite's defaults) and
    the evaluation's data and sample sizes.

    `cache` memoises work shared by suites and subjects within one
    validation (the base model's own answers to the probes are computed
    once, not once per suite and subject); keys start with the subject's
    label. `shared` holds what `Suite.measure` took across subjects.
    """

    candidate: Subject
    base: Subject | None = None
    # The version the target deployment serves now, when one was named.
    production: Subject | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    max_new_tokens: int = 48
    seed: int = 42
    mode: str = "standard"
    # The dataset's task type and its held-out examples (already sampled
    # for the mode; services.common.prompts.Example).
    task: str = ""
    examples: list[Any] = field(default_factory=list)
    # The safety probe set's rows (services.validator.probes.Probe).
    probes: list[Any] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> Sizes:
        return MODES[self.mode]

    def threshold(self, name: str, default: float) -> float:
        return self.thresholds.get(name, default)

    def memo(self, subject: Subject, key: str, compute: Any) -> Any:
        """`compute()` once per subject and key within this validation."""
        full = f"{subject.label}:{key}"
        if full not in self.cache:
            self.cache[full] = compute()
        return self.cache[full]

    def for_subject(self, subject: Subject) -> SuiteContext:
        """The same evaluation with `subject` as the one measured (the base
        and production versions are scored like the candidate, to compare
        suite by suite); cache and shared measurements are kept."""
        return dataclasses.replace(self, candidate=subject)
