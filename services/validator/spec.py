"""What a validation job is asked (the spec), what it resolved at Start, and
what it found (the outcome); and the checks that refuse a bad request
before any job exists."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument
from services.common.gates import Gates
from services.validator.assessment import ComparisonResult
from services.validator.evaluation import ModelScores
from services.validator.gates import GateResult
from services.validator.report import (
    DEFAULT_GRADES,
    DEFAULT_WEIGHTS,
    check_grades,
    check_weights,
)
from services.validator.suites import SUITES, suite
from services.validator.suites.base import MODE_SUITES, MODES, SuiteResult


@dataclass
class ValidationSpec:
    model_id: str
    adapter_id: str = ""
    baseline_model_id: str = ""
    dataset_id: str = ""
    gates: Gates = field(default_factory=Gates)
    # 0 takes the mode's sample size.
    max_examples: int = 0
    max_new_tokens: int = 64
    eval_fraction: float = 0.1
    seed: int = 42
    mode: str = "standard"
    suites: list[str] = field(default_factory=list)  # empty: the mode's
    weights: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    deployment: str = ""
    safety_probe_set_id: str = ""
    grade_bounds: list[tuple[str, float]] = field(default_factory=list)

    def suite_names(self) -> list[str]:
        return list(self.suites or MODE_SUITES[self.mode])

    def grades(self) -> tuple[tuple[str, float], ...]:
        return tuple((n, float(b)) for n, b in self.grade_bounds) or DEFAULT_GRADES


@dataclass
class ResolvedValidation:
    spec: ValidationSpec
    model: Any
    adapter: Any | None
    baseline: Any | None
    dataset: Any
    # The candidate's base model (the reference of relative checks).
    base: Any | None = None
    # The version the target deployment serves now.
    production_model: Any | None = None
    production_adapter: Any | None = None
    probe_set: Any | None = None


@dataclass
class ValidationOutcome:
    report_id: str
    candidate_id: str
    candidate: ModelScores
    baseline: ModelScores | None
    score: float
    score_metric: str
    passed: bool
    gates: list[GateResult]
    create_time: float
    mode: str = "standard"
    suites: list[SuiteResult] = field(default_factory=list)
    overall: float = 0.0
    grade: str = ""
    weights: dict[str, float] = field(default_factory=dict)
    recommendations: list[str] = field(default_factory=list)
    comparisons: list[ComparisonResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    grade_bounds: list[tuple[str, float]] = field(default_factory=list)


def check_spec(spec: ValidationSpec) -> None:
    """Refuses what no validation could run with (INVALID_ARGUMENT naming
    the field and the values it may take)."""
    if not spec.model_id:
        raise InvalidArgument(
            "model_id is required: the registry id of the model to validate",
            field="model_id",
        )
    if not spec.dataset_id:
        raise InvalidArgument(
            "dataset_id is required: validation scores the held-out split of a dataset",
            field="dataset_id",
        )
    if spec.mode not in MODES:
        raise InvalidArgument(
            f"unknown mode {spec.mode!r}; known modes: {', '.join(MODES)}",
            field="mode",
        )
    for name in spec.suites:
        suite(name)  # unknown: InvalidArgument listing the known ones
    if len(set(spec.suites)) != len(spec.suites):
        raise InvalidArgument("suites lists a suite twice", field="suites")
    check_weights(spec.weights, tuple(sorted(SUITES)))
    chosen = {**DEFAULT_WEIGHTS, **spec.weights}
    if not any(chosen.get(n, 0.0) > 0 for n in spec.suite_names()):
        raise InvalidArgument(
            "weights give every suite that runs ("
            + ", ".join(spec.suite_names())
            + ") weight 0: give at least one a positive weight",
            field="weights",
        )
    for name, value in spec.thresholds.items():
        if not math.isfinite(value):
            raise InvalidArgument(
                f"thresholds.{name} must be a finite number, got {value}",
                field=f"thresholds.{name}",
            )
    check_grades(spec.grades())
    if not 0 <= spec.max_examples <= 10000:
        raise InvalidArgument(
            "max_examples must be in [1, 10000] (0 takes the mode's sample size)",
            field="max_examples",
        )
    if not 1 <= spec.max_new_tokens <= 4096:
        raise InvalidArgument(
            "max_new_tokens must be in [1, 4096]", field="max_new_tokens"
        )
    spec.gates.check()
    for name in spec.gates.max_regression:
        if name not in SUITES:
            raise InvalidArgument(
                f"gates.max_regression: unknown suite {name!r}; known suites: "
                + ", ".join(sorted(SUITES)),
                field=f"gates.max_regression.{name}",
            )
