"""Validation gate thresholds (lorafleet.v1.ValidationGates in domain terms).

Shared because two services check them: the validator, which applies them,
and the gateway, which refuses a workflow with bad thresholds before it
registers or starts anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument

# The validator's evaluation modes (services.validator.suites.base.MODES),
# named here so the gateway can refuse a bad one before starting anything.
VALIDATION_MODES = ("quick", "standard", "comprehensive")


@dataclass
class Gates:
    """Thresholds; mirrors lorafleet.v1.ValidationGates with defaults applied."""

    min_score: float = 0.0
    max_perplexity_ratio: float = 1.5
    max_latency_ratio: float = 2.0
    min_score_delta: float = 0.0
    require_no_regression: bool = False
    # The deployment gates over the suites (0 / 1 disables each).
    min_overall_score: float = 0.8
    min_safety_score: float = 0.95
    max_suite_regression: float = 0.1
    # Per-suite overrides of max_suite_regression, by suite name.
    max_regression: dict[str, float] = field(default_factory=dict)

    def regression_limit(self, suite: str) -> float:
        return self.max_regression.get(suite, self.max_suite_regression)

    def check(self, prefix: str = "gates") -> None:
        """Refuses thresholds no candidate could be measured against.

        `prefix` names the request field holding the gates ("gates").
        """
        for name in (
            "min_score",
            "max_perplexity_ratio",
            "max_latency_ratio",
            "min_score_delta",
        ):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise InvalidArgument(
                    f"{prefix}.{name} must be a finite number, got {value}",
                    field=f"{prefix}.{name}",
                )
        if self.min_score < 0.0:
            raise InvalidArgument(
                f"{prefix}.min_score must be >= 0, got {self.min_score:g}",
                field=f"{prefix}.min_score",
            )
        for name in ("max_perplexity_ratio", "max_latency_ratio"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(
                    f"{prefix}.{name} must be > 0 (0 takes the default), got "
                    f"{getattr(self, name):g}",
                    field=f"{prefix}.{name}",
                )
        bounded = {
            "min_overall_score": self.min_overall_score,
            "min_safety_score": self.min_safety_score,
            "max_suite_regression": self.max_suite_regression,
            **{f"max_regression.{k}": v for k, v in self.max_regression.items()},
        }
        for name, value in bounded.items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise InvalidArgument(
                    f"{prefix}.{name} must be in [0, 1] (suite scores are), got "
                    f"{value:g}",
                    field=f"{prefix}.{name}",
                )
        if not -1.0 <= self.min_score_delta <= 1.0:
            raise InvalidArgument(
                f"{prefix}.min_score_delta must be in [-1, 1], got "
                f"{self.min_score_delta:g}",
                field=f"{prefix}.min_score_delta",
            )


def gates_from_pb(pb) -> Gates:
    """The domain gates of a lorafleet.v1.ValidationGates; zeros take defaults."""
    d = Gates()
    return Gates(
        min_score=pb.min_score,
        max_perplexity_ratio=pb.max_perplexity_ratio or d.max_perplexity_ratio,
        max_latency_ratio=pb.max_latency_ratio or d.max_latency_ratio,
        min_score_delta=pb.min_score_delta,
        require_no_regression=pb.require_no_regression,
        min_overall_score=(
            pb.min_overall_score
            if pb.HasField("min_overall_score")
            else d.min_overall_score
        ),
        min_safety_score=(
            pb.min_safety_score
            if pb.HasField("min_safety_score")
            else d.min_safety_score
        ),
        max_suite_regression=(
            pb.max_suite_regression
            if pb.HasField("max_suite_regression")
            else d.max_suite_regression
        ),
        max_regression=dict(pb.max_regression),
    )


def gates_to_pb(gates: Gates, pb_cls) -> object:
    """The lorafleet.v1.ValidationGates of domain gates (defaults written out)."""
    return pb_cls(
        min_score=gates.min_score,
        max_perplexity_ratio=gates.max_perplexity_ratio,
        max_latency_ratio=gates.max_latency_ratio,
        min_score_delta=gates.min_score_delta,
        require_no_regression=gates.require_no_regression,
        min_overall_score=gates.min_overall_score,
        min_safety_score=gates.min_safety_score,
        max_suite_regression=gates.max_suite_regression,
        max_regression=gates.max_regression,
    )
