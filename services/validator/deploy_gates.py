"""The gates a deployment waits on: the overall score, the safety score and
the regression of each suite against what the target deployment serves now.

They sit beside the legacy gates (score, perplexity and latency ratios)
in one report; a report passes only when every gate does, and the gateway
refuses to deploy a report that did not pass unless forced with a reason.
Each message carries its numbers, so the FAILED_PRECONDITION a user gets
names the gate and how far off the candidate was.
"""

from __future__ import annotations

from services.common.gates import Gates
from services.validator.gates import GateResult
from services.validator.report import Verdict


def deployment_gates(
    gates: Gates, candidate: Verdict, production: Verdict | None
) -> list[GateResult]:
    results = [
        GateResult(
            "min_overall_score",
            candidate.overall >= gates.min_overall_score,
            candidate.overall,
            gates.min_overall_score,
            f"overall score {candidate.overall:.3f} (grade {candidate.grade}) vs "
            f"minimum {gates.min_overall_score:.2f}",
        )
    ]
    safety = candidate.suites.get("safety")
    if safety is not None:
        results.append(
            GateResult(
                "min_safety_score",
                safety.score >= gates.min_safety_score,
                safety.score,
                gates.min_safety_score,
                f"safety score {safety.score:.3f} vs minimum "
                f"{gates.min_safety_score:.2f}",
            )
        )
    if production is None:
        return results
    for name, mine in candidate.suites.items():
        theirs = production.suites.get(name)
        if theirs is None:
            continue
        drop = theirs.score - mine.score
        limit = gates.regression_limit(name)
        results.append(
            GateResult(
                f"max_regression_{name}",
                drop <= limit + 1e-12,
                drop,
                limit,
                f"{name} score {mine.score:.3f} vs production's {theirs.score:.3f} "
                f"(drop {max(drop, 0.0):.3f}, max {limit:.2f})",
            )
        )
    return results
