"""canary: the candidate's weight grows step by step (5 -> 25 -> 50%) while
each step's analysis holds; a failed analysis rolls back at once."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.gateway.metrics import ArmTotals
from services.gateway.rollouts.controller import (
    CANDIDATE_ROLE,
    STABLE_ROLE,
    RolloutRun,
    target,
)
from services.gateway.rollouts.model import RolloutOutcome
from services.gateway.rollouts.policy import ADVANCE, PROMOTE, ROLLBACK, CanaryPolicy
from services.gateway.rollouts.settings import (
    FULL_WEIGHT,
    RolloutSettings,
    check_duration,
    check_share,
)
from services.gateway.rollouts.strategies.base import Strategy

MAX_STEPS = 10


class Canary(Strategy):
    name = "canary"
    summary = "weight steps with analysis at each, automatic rollback"
    arm = "canary"

    def check(self, settings: RolloutSettings) -> None:
        steps = settings.canary.steps_bps
        if len(steps) > MAX_STEPS:
            raise InvalidArgument(
                f"settings.canary.steps_bps has {len(steps)} steps; at most "
                f"{MAX_STEPS}",
                field="settings.canary.steps_bps",
            )
        for i, weight in enumerate(steps):
            check_share(weight, f"settings.canary.steps_bps[{i}]")
            if i and weight <= steps[i - 1]:
                raise InvalidArgument(
                    f"settings.canary.steps_bps must increase: step {i} is {weight} "
                    f"after {steps[i - 1]}",
                    field=f"settings.canary.steps_bps[{i}]",
                )
        check_duration(
            settings.canary.step_interval_s, "settings.canary.step_interval_s"
        )

    def total_steps(self, settings: RolloutSettings) -> int:
        return len(settings.canary.steps_bps)

    def layout(self, run: RolloutRun, weight: int) -> list:
        return [
            target(run.spec.stable, "stable", STABLE_ROLE, FULL_WEIGHT - weight),
            target(run.spec.candidate, self.arm_of(run.id), CANDIDATE_ROLE, weight),
        ]

    def run(self, run: RolloutRun) -> RolloutOutcome:
        settings = run.settings
        policy = CanaryPolicy(
            tuple(settings.canary.steps_bps),
            settings.canary.step_interval_s,
            settings.analysis,
        )
        index = int(run.details.get("step_index", 0))
        while True:
            if run.details.get("step_started") != index:
                self._start_step(run, policy, index)
            controls, change = run.poll()
            if change == "resumed":
                self._start_step(run, policy, index, again=True)
            totals = run.observed("rollout_mark")
            stable = totals.get("stable", ArmTotals())
            canary = totals.get(self.arm_of(run.id), ArmTotals())
            in_step = (
                run.observed("step_mark").get(self.arm_of(run.id), ArmTotals()).requests
            )
            decision = policy.decide(
                index, run.elapsed("step_mark"), stable, canary, in_step
            )
            if decision.action == ROLLBACK:
                run.analysis_event(decision.verdict, stable, canary, force=True)
                return run.roll_back(
                    f"analysis failed at {policy.weight(index) / 100:g}%: "
                    f"{decision.verdict.reason}"
                )
            if controls.paused:
                continue  # hold the weights; rollbacks above still happen
            if decision.action in (ADVANCE, PROMOTE):
                run.analysis_event(decision.verdict, stable, canary, force=True)
                if decision.action == PROMOTE:
                    return run.promote(
                        f"all {len(policy.steps_bps)} steps passed their analysis"
                    )
                index += 1
                continue
            run.analysis_event(decision.verdict, stable, canary, force=False)

    def _start_step(
        self, run: RolloutRun, policy: CanaryPolicy, index: int, again: bool = False
    ) -> None:
        weight = policy.weight(index)
        n = len(policy.steps_bps)
        verb = "restarted" if again else "started"
        run.set_targets(
            self.layout(run, weight),
            weight,
            index + 1,
            f"step {index + 1}/{n} {verb}: {run.spec.candidate.label} gets "
            f"{weight / 100:g}% of {run.spec.deployment}",
            step_index=index,
            total_steps=n,
        )
        # The step's evidence starts once every replica routes by its weight.
        run.mark("step_mark")
        if "rollout_mark" not in run.details:
            run.mark("rollout_mark")
        run.ctx.record(step_started=index)
