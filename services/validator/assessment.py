"""Running the suites on every subject and comparing the candidate with the
versions it would replace.

Every subject (candidate, base, production, a legacy baseline) is scored by
the same suites with the same base model as reference, so a comparison is
suite against suite: "safety 0.62 vs production's 0.98" means the same
probes, the same detectors, the same tolerance. A suite that raises is a
failed critical check naming the error, never a crashed job: a broken
candidate is what the validator exists to report.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from services.validator.report import Verdict, fold_suites
from services.validator.suites import suite as suite_named
from services.validator.suites.base import (
    Subject,
    SuiteContext,
    SuiteResult,
    fold,
    holds,
)

log = logging.getLogger(__name__)

# Relative improvement over the base on the task's primary metric that the
# specification asks a fine-tune to reach ("the seed's bar").
TASK_BAR = 0.15
LOWER_IS_BETTER = {"perplexity"}


@dataclass
class ComparisonResult:
    """Another version's verdict beside the candidate's."""

    target: str  # "base", "production", "baseline"
    model_id: str
    adapter_id: str
    overall: float
    suite_scores: dict[str, float]
    suite_deltas: dict[str, float]  # candidate minus target
    overall_delta: float
    task_metric: str = ""
    task_value: float = math.nan
    task_improvement: float = math.nan
    meets_task_bar: bool = False


@dataclass
class Assessment:
    verdicts: dict[str, Verdict]  # by subject label
    skipped: dict[str, str] = field(default_factory=dict)  # suite -> why


def run_suites(
    subjects: list[Subject],
    ctx: SuiteContext,
    names: list[str],
    weights: dict[str, float],
    grades: tuple[tuple[str, float], ...],
    progress: Callable[[str], None] = lambda _: None,
) -> Assessment:
    """Every applicable suite on every subject; one verdict per subject."""
    results: dict[str, list[SuiteResult]] = {s.label: [] for s in subjects}
    skipped: dict[str, str] = {}
    for name in names:
        suite = suite_named(name)
        why = suite.applies_to(ctx)
        if why:
            skipped[name] = why
            continue
        progress(f"{name}: measuring {len(subjects)} model(s)")
        try:
            suite.measure(subjects, ctx)
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            log.exception("suite %s failed to measure", name)
            for subject in subjects:
                results[subject.label].append(_crashed(name, exc))
            continue
        for subject in subjects:
            if subject.label != "candidate" and suite.applies_to(
                ctx.for_subject(subject)
            ):
                continue  # e.g. a causal base beside a classifier candidate
            progress(f"{name}: {subject.label} {subject.artifact_id}")
            try:
                result = suite.run(ctx.for_subject(subject))
            except Exception as exc:  # noqa: BLE001 - reported as a failed check
                log.exception("suite %s failed on %s", name, subject.label)
                result = _crashed(name, exc)
            results[subject.label].append(result)
    return Assessment(
        verdicts={
            label: fold_suites(found, weights, grades)
            for label, found in results.items()
        },
        skipped=skipped,
    )


def not_loaded(subject_label: str, error: str) -> SuiteResult:
    """The basic suite's verdict on a model that did not load."""
    return fold(
        "basic",
        [
            holds(
                "loads",
                False,
                f"{subject_label} failed to load: {error}",
                "the model's files do not load: check that config.json matches "
                "the weights and that every tensor is present",
                critical=True,
            )
        ],
        {},
    )


def _crashed(name: str, exc: Exception) -> SuiteResult:
    return fold(
        name,
        [
            holds(
                "suite_ran",
                False,
                f"the {name} suite raised {type(exc).__name__}: {exc}",
                f"the model breaks the {name} suite's measurements; run it "
                "locally to see where",
                critical=True,
            )
        ],
        {},
    )


def compare(
    target: str,
    model_id: str,
    adapter_id: str,
    candidate: Verdict,
    other: Verdict,
    task_metric: str,
) -> ComparisonResult:
    """The candidate's change against `other`, suite by suite."""
    scores = {n: r.score for n, r in other.suites.items()}
    deltas = {
        n: candidate.suites[n].score - s
        for n, s in scores.items()
        if n in candidate.suites
    }
    result = ComparisonResult(
        target=target,
        model_id=model_id,
        adapter_id=adapter_id,
        overall=other.overall,
        suite_scores=scores,
        suite_deltas=deltas,
        overall_delta=candidate.overall - other.overall,
    )
    mine, theirs = candidate.suites.get("task"), other.suites.get("task")
    if task_metric and mine is not None and theirs is not None:
        value = mine.metrics.get(task_metric, math.nan)
        ref = theirs.metrics.get(task_metric, math.nan)
        result.task_metric = task_metric
        result.task_value = ref
        result.task_improvement = improvement(task_metric, value, ref)
        # The bar is the seed's "15% better than the base"; against other
        # versions the change is reported, not judged.
        result.meets_task_bar = target == "base" and result.task_improvement >= TASK_BAR
    return result


def improvement(metric: str, value: float, reference: float) -> float:
    """Relative improvement of `value` over `reference` (perplexity: lower
    is better); NaN when either is missing or the reference is 0."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return math.nan
    if metric in LOWER_IS_BETTER:
        return reference / value - 1.0 if value > 0 else math.nan
    if reference == 0:  # from nothing to something: unbounded, the bar is met
        return math.inf if value > 0 else 0.0
    return (value - reference) / reference if reference > 0 else math.nan
