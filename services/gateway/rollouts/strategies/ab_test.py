"""ab_test: a fixed split for a duration or a sample size, then the arms'
success rates are compared; the better candidate is promoted, otherwise the
stable version stays (or the operator decides, with manual_decision)."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.gateway.analysis import FAIL, analyze
from services.gateway.metrics import ArmTotals
from services.gateway.rollouts.controller import (
    CANDIDATE_ROLE,
    STABLE_ROLE,
    RolloutRun,
    target,
)
from services.gateway.rollouts.controls import CONCLUDE
from services.gateway.rollouts.experiment import conclude
from services.gateway.rollouts.model import RolloutOutcome
from services.gateway.rollouts.settings import (
    FULL_WEIGHT,
    RolloutSettings,
    check_duration,
    check_share,
)
from services.gateway.rollouts.strategies.base import Strategy


class AbTest(Strategy):
    name = "ab_test"
    summary = "fixed split, then the better arm by success rate"
    arm = "candidate"

    def check(self, settings: RolloutSettings) -> None:
        ab = settings.ab_test
        check_share(
            ab.candidate_weight_bps,
            "settings.ab_test.candidate_weight_bps",
            allow_full=False,
        )
        check_duration(ab.duration_s, "settings.ab_test.duration_s", low=0.001)
        if not 0 <= ab.sample_size <= 1_000_000_000:
            raise InvalidArgument(
                "settings.ab_test.sample_size must be in [0, 1e9], got "
                f"{ab.sample_size}",
                field="settings.ab_test.sample_size",
            )
        if not 0.5 <= ab.confidence <= 0.9999:
            raise InvalidArgument(
                f"settings.ab_test.confidence must be in [0.5, 0.9999], got "
                f"{ab.confidence}",
                field="settings.ab_test.confidence",
            )

    def run(self, run: RolloutRun) -> RolloutOutcome:
        ab = run.settings.ab_test
        weight = ab.candidate_weight_bps
        if not run.details.get("split_set"):
            run.set_targets(
                [
                    target(
                        run.spec.stable, "stable", STABLE_ROLE, FULL_WEIGHT - weight
                    ),
                    target(
                        run.spec.candidate, self.arm_of(run.id), CANDIDATE_ROLE, weight
                    ),
                ],
                weight,
                1,
                f"experiment started: {run.spec.candidate.label} gets "
                f"{weight / 100:g}% of {run.spec.deployment}",
                split_set=True,
                total_steps=1,
            )
        if "rollout_mark" not in run.details:
            run.mark("rollout_mark")
        while True:
            controls, _ = run.poll()
            if run.details.get("experiment"):
                continue  # concluded; waiting for the operator's decision
            totals = run.observed("rollout_mark")
            stable = totals.get("stable", ArmTotals())
            candidate = totals.get(self.arm_of(run.id), ArmTotals())
            guard = analyze(stable, candidate, run.settings.analysis)
            if guard.decision == FAIL:
                run.analysis_event(guard, stable, candidate, force=True)
                return run.roll_back(f"experiment stopped early: {guard.reason}")
            asked = controls.command == CONCLUDE
            over = run.elapsed("rollout_mark") >= ab.duration_s or (
                ab.sample_size > 0
                and min(stable.requests, candidate.requests) >= ab.sample_size
            )
            if controls.paused and not asked:
                continue
            if not (asked or over):
                run.analysis_event(guard, stable, candidate, force=False)
                continue
            result = conclude(stable, candidate, ab.confidence, self.arm_of(run.id))
            why = "asked by the operator" if asked else "its planned size was reached"
            run.event(
                "concluded",
                f"experiment concluded ({why}): {result.summary}",
                metrics={"p_value": result.p_value},
                record={"experiment": result.to_dict()},
            )
            if asked:
                run.controls.done(run.id)
            if run.settings.manual_decision:
                run.await_decision()
                continue
            if result.winner == self.arm_of(run.id):
                return run.promote(f"experiment: {result.summary}")
            return run.roll_back(f"experiment: {result.summary}")
