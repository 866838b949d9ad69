"""The interface every rollout strategy implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from services.gateway.rollouts.settings import RolloutSettings

if TYPE_CHECKING:
    from services.gateway.rollouts.controller import RolloutRun
    from services.gateway.rollouts.model import RolloutOutcome


class Strategy(ABC):
    """How traffic moves from the stable version to a candidate.

    `run` is called on every attempt (a gateway restart runs it again) and
    must continue from what `run.details` says was done, through the
    idempotent helpers of `RolloutRun`.
    """

    name: str = ""
    summary: str = ""
    # The candidate's arm in the deployment while the rollout runs is this
    # plus the rollout's id suffix ("canary-3f9a2c"): each rollout's metrics
    # stay its own, however late an earlier rollout's requests are counted.
    arm: str = "canary"
    unique_arm: bool = True

    def arm_of(self, rollout_id: str) -> str:
        return f"{self.arm}-{rollout_id[-6:]}" if self.unique_arm else self.arm

    def check(self, settings: RolloutSettings) -> None:
        """Refuses settings this strategy cannot run (INVALID_ARGUMENT naming
        the field); `settings` has its defaults filled in."""
        return None

    def total_steps(self, settings: RolloutSettings) -> int:
        return 1

    @abstractmethod
    def run(self, run: RolloutRun) -> RolloutOutcome: ...
