"""Validation gate thresholds (lorafleet.v1.ValidationGates in domain terms).

Shared because two services check them: the validator, which applies them,
and the gateway, which refuses a workflow with bad thresholds before it
registers or starts anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.common.errors import InvalidArgument


@dataclass
class Gates:
    """Thresholds; mirrors lorafleet.v1.ValidationGates with defaults applied."""

    min_score: float = 0.0
    max_perplexity_ratio: float = 1.5
    max_latency_ratio: float = 2.0
    min_score_delta: float = 0.0
    require_no_regression: bool = False

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
    )
