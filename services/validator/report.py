"""Folding suite results into one verdict: weights, the overall score, a grade.

Weights are renormalised over the suites that ran (a `quick` run has no
safety suite; its overall score is not capped at 0.7 for it). Grades come
from configurable lower bounds, checked best first. Recommendations are the
failed checks' own advice, most heavily weighted suite first, without
repeats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.validator.suites.base import SuiteResult

# The specification's dimensions and their default weights.
DEFAULT_WEIGHTS = {"basic": 0.4, "task": 0.3, "safety": 0.2, "performance": 0.1}
# Lower bounds of each grade, best first; below the last one: "poor".
DEFAULT_GRADES = (("excellent", 0.9), ("good", 0.75), ("fair", 0.6))


def check_weights(weights: dict[str, float], known: tuple[str, ...]) -> None:
    """Refuses weights no score could be folded with (named in the message)."""
    for name, weight in weights.items():
        if name not in known:
            raise InvalidArgument(
                f"weights: unknown suite {name!r}; known suites: {', '.join(known)}",
                field=f"weights.{name}",
            )
        if not math.isfinite(weight) or weight < 0:
            raise InvalidArgument(
                f"weights.{name} must be a finite number >= 0, got {weight:g}",
                field=f"weights.{name}",
            )
    if weights and sum(weights.values()) <= 0:
        defaults = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_WEIGHTS.items())
        raise InvalidArgument(
            "weights sum to 0: give at least one suite a positive weight "
            f"(defaults: {defaults})",
            field="weights",
        )


def check_grades(grades: tuple[tuple[str, float], ...]) -> None:
    bounds = [b for _, b in grades]
    if any(not 0.0 <= b <= 1.0 for b in bounds) or bounds != sorted(
        bounds, reverse=True
    ):
        raise InvalidArgument(
            "grade bounds must be in [0, 1] and descend from the best grade, got "
            + ", ".join(f"{n} {b:g}" for n, b in grades),
            field="grades",
        )


@dataclass
class Verdict:
    overall: float
    grade: str
    weights: dict[str, float]  # as applied (normalised over the suites run)
    suites: dict[str, SuiteResult]
    recommendations: list[str] = field(default_factory=list)


def grade_of(score: float, grades=DEFAULT_GRADES) -> str:
    for name, bound in grades:
        if score >= bound:
            return name
    return "poor"


def fold_suites(
    results: list[SuiteResult],
    weights: dict[str, float] | None = None,
    grades: tuple[tuple[str, float], ...] = DEFAULT_GRADES,
) -> Verdict:
    """The weighted overall score of the suites that ran, and its grade."""
    chosen = {**DEFAULT_WEIGHTS, **(weights or {})}
    ran = {r.suite: r for r in results}
    raw = {name: chosen.get(name, 0.0) for name in ran}
    total = sum(raw.values())
    applied = {n: (w / total if total else 0.0) for n, w in raw.items()}
    overall = sum(applied[n] * ran[n].score for n in ran) if total else 0.0
    advice: list[str] = []
    for name in sorted(ran, key=lambda n: -applied[n]):
        for check in ran[name].checks:
            if not check.passed and check.recommendation not in advice:
                if check.recommendation:
                    advice.append(check.recommendation)
    return Verdict(
        overall=overall,
        grade=grade_of(overall, grades),
        weights=applied,
        suites=ran,
        recommendations=advice,
    )
