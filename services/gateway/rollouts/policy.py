"""The canary's decisions, with no I/O: what to do after one look at the metrics.

The controller (`strategies/canary.py`) feeds it the per-arm totals it reads
from the gateway database and does what it says; the benchmark
(`bench/rollout_bench.py`) feeds it a simulated request stream and clock.
Either way the same code decides, so the benchmark measures the controller.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.analysis import FAIL, PASS, AnalysisSettings, Verdict, analyze
from services.gateway.metrics import ArmTotals

HOLD, ADVANCE, PROMOTE, ROLLBACK = "hold", "advance", "promote", "rollback"
FULL_WEIGHT = 10_000


@dataclass(frozen=True)
class Decision:
    action: str  # hold, advance, promote or rollback
    verdict: Verdict


@dataclass(frozen=True)
class CanaryPolicy:
    """Weight steps, the minimum time per step, and the analysis settings."""

    steps_bps: tuple[int, ...]
    step_interval_s: float
    analysis: AnalysisSettings

    def decide(
        self,
        step: int,
        step_elapsed_s: float,
        stable: ArmTotals,
        canary: ArmTotals,
        step_canary_requests: int,
    ) -> Decision:
        """`step` is the 0-based index of the current step; `stable` and
        `canary` are the arms' totals since the rollout started (the
        sequential test uses all the evidence), `step_canary_requests` the
        canary's requests in this step (each step needs `min_requests`).

        A failed analysis rolls back at once, at any point of a step. A step
        passes when its interval is over, it has its requests and the
        thresholds hold; the last step passing promotes.
        """
        step_done = (
            step_elapsed_s >= self.step_interval_s
            and step_canary_requests >= self.analysis.min_requests
        )
        verdict = analyze(stable, canary, self.analysis, step_done=step_done)
        if verdict.decision == FAIL:
            return Decision(ROLLBACK, verdict)
        if verdict.decision == PASS and step_done:
            last = step >= len(self.steps_bps) - 1
            return Decision(PROMOTE if last else ADVANCE, verdict)
        return Decision(HOLD, verdict)

    def weight(self, step: int) -> int:
        return self.steps_bps[min(step, len(self.steps_bps) - 1)]
