"""replace: all traffic to the candidate at once (it is loaded first)."""

from __future__ import annotations

from services.gateway.rollouts.controller import RolloutRun
from services.gateway.rollouts.model import RolloutOutcome
from services.gateway.rollouts.strategies.base import Strategy


class Replace(Strategy):
    name = "replace"
    summary = "all traffic to the candidate at once"
    arm = "stable"
    unique_arm = False

    def run(self, run: RolloutRun) -> RolloutOutcome:
        run.poll(wait=False)
        return run.promote("replaced at once")
