"""Quality and speed gates: each compares one measured value with a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.common.gates import Gates
from services.validator.evaluation import ModelScores

__all__ = ["GateResult", "Gates", "evaluate_gates"]


@dataclass
class GateResult:
    name: str
    passed: bool
    value: float
    threshold: float
    message: str


def primary_score(
    scores: ModelScores, baseline: ModelScores | None
) -> tuple[float, str]:
    """Exact match when references exist, else baseline/candidate perplexity."""
    if scores.exact_match >= 0:
        return scores.exact_match, "exact_match"
    if (
        baseline is not None
        and math.isfinite(scores.perplexity)
        and scores.perplexity > 0
    ):
        return baseline.perplexity / scores.perplexity, "perplexity_ratio"
    return (
        1.0 / scores.perplexity if scores.perplexity > 0 else 0.0
    ), "inverse_perplexity"


def evaluate_gates(
    gates: Gates, candidate: ModelScores, baseline: ModelScores | None
) -> tuple[float, str, list[GateResult]]:
    score, metric = primary_score(candidate, baseline)
    results = [
        GateResult(
            "loads",
            candidate.loads,
            float(candidate.loads),
            1.0,
            "model loads" if candidate.loads else "model failed to load",
        ),
        GateResult(
            "generates",
            candidate.generates,
            float(candidate.generates),
            1.0,
            "model generates text"
            if candidate.generates
            else "model produced no tokens",
        ),
        GateResult(
            "finite_perplexity",
            math.isfinite(candidate.perplexity),
            candidate.perplexity,
            0.0,
            f"perplexity {candidate.perplexity:.3f}",
        ),
        GateResult(
            "min_score",
            score >= gates.min_score,
            score,
            gates.min_score,
            f"{metric} {score:.3f} vs minimum {gates.min_score:.3f}",
        ),
    ]
    if baseline is not None:
        ratio = (
            candidate.perplexity / baseline.perplexity
            if baseline.perplexity
            else math.inf
        )
        results.append(
            GateResult(
                "max_perplexity_ratio",
                ratio <= gates.max_perplexity_ratio,
                ratio,
                gates.max_perplexity_ratio,
                f"perplexity {candidate.perplexity:.3f} vs baseline "
                f"{baseline.perplexity:.3f} "
                f"(ratio {ratio:.3f}, max {gates.max_perplexity_ratio:.2f})",
            )
        )
        if baseline.latency_ms_per_token > 0 and candidate.latency_ms_per_token > 0:
            lat = candidate.latency_ms_per_token / baseline.latency_ms_per_token
            results.append(
                GateResult(
                    "max_latency_ratio",
                    lat <= gates.max_latency_ratio,
                    lat,
                    gates.max_latency_ratio,
                    f"{candidate.latency_ms_per_token:.1f} ms/token vs baseline "
                    f"{baseline.latency_ms_per_token:.1f} (ratio {lat:.2f})",
                )
            )
        if gates.require_no_regression or gates.min_score_delta:
            base_score, _ = primary_score(baseline, None)
            delta = score - base_score
            results.append(
                GateResult(
                    "min_score_delta",
                    delta >= gates.min_score_delta,
                    delta,
                    gates.min_score_delta,
                    f"{metric} changed by {delta:+.3f} vs baseline {base_score:.3f}",
                )
            )
    return score, metric, results
