"""shadow: the candidate gets copies of a share of requests; callers only
ever get the stable answer and never wait for the copy. The shadow's
errors, latency, quality and agreement with stable decide at the end."""

from __future__ import annotations

import math

from services.common.errors import InvalidArgument
from services.gateway.analysis import FAIL, PASS, analyze
from services.gateway.metrics import ArmTotals
from services.gateway.rollouts.controller import (
    SHADOW_ROLE,
    STABLE_ROLE,
    RolloutRun,
    target,
)
from services.gateway.rollouts.model import RolloutOutcome
from services.gateway.rollouts.settings import (
    FULL_WEIGHT,
    RolloutSettings,
    check_duration,
    check_share,
)
from services.gateway.rollouts.strategies.base import Strategy


class Shadow(Strategy):
    name = "shadow"
    summary = "mirror requests to the candidate, answer from stable"
    arm = "shadow"

    def check(self, settings: RolloutSettings) -> None:
        s = settings.shadow
        check_share(s.mirror_bps, "settings.shadow.mirror_bps")
        check_duration(s.duration_s, "settings.shadow.duration_s", low=0.001)
        if not 0 <= s.sample_size <= 1_000_000_000:
            raise InvalidArgument(
                f"settings.shadow.sample_size must be in [0, 1e9], got {s.sample_size}",
                field="settings.shadow.sample_size",
            )
        if not (math.isfinite(s.min_agreement) and 0 <= s.min_agreement <= 1):
            raise InvalidArgument(
                f"settings.shadow.min_agreement must be in [0, 1], got "
                f"{s.min_agreement}",
                field="settings.shadow.min_agreement",
            )

    def run(self, run: RolloutRun) -> RolloutOutcome:
        s = run.settings.shadow
        if not run.details.get("mirror_set"):
            run.set_targets(
                [
                    target(run.spec.stable, "stable", STABLE_ROLE, FULL_WEIGHT),
                    target(
                        run.spec.candidate,
                        self.arm_of(run.id),
                        SHADOW_ROLE,
                        mirror=s.mirror_bps,
                    ),
                ],
                s.mirror_bps,
                1,
                f"shadowing started: {s.mirror_bps / 100:g}% of "
                f"{run.spec.deployment}'s requests are copied to "
                f"{run.spec.candidate.label}",
                mirror_set=True,
                total_steps=1,
            )
        if "rollout_mark" not in run.details:
            run.mark("rollout_mark")
        while True:
            controls, _ = run.poll()
            if run.details.get("shadow_verdict"):
                continue  # concluded; waiting for the operator's decision
            totals = run.observed("rollout_mark")
            stable = totals.get("stable", ArmTotals())
            shadow = totals.get(self.arm_of(run.id), ArmTotals())
            guard = analyze(stable, shadow, run.settings.analysis)
            if guard.decision == FAIL:
                run.analysis_event(guard, stable, shadow, force=True)
                return run.roll_back(f"shadowing stopped early: {guard.reason}")
            over = run.elapsed("rollout_mark") >= s.duration_s or (
                s.sample_size > 0 and shadow.requests >= s.sample_size
            )
            if controls.paused or not over:
                run.analysis_event(guard, stable, shadow, force=False)
                continue
            verdict = analyze(stable, shadow, run.settings.analysis, step_done=True)
            run.analysis_event(verdict, stable, shadow, force=True)
            agreement = (
                shadow.agreements / shadow.successes if shadow.successes else 0.0
            )
            problems = [] if verdict.decision == PASS else [verdict.reason]
            if agreement < s.min_agreement:
                problems.append(
                    f"agreement with stable {agreement:.1%} < {s.min_agreement:.1%}"
                )
            summary = (
                f"{shadow.requests} shadowed requests, agreement {agreement:.1%}: "
                + ("; ".join(problems) if problems else "every check passed")
            )
            run.event(
                "concluded",
                summary,
                metrics={
                    "agreement": agreement,
                    "shadow_requests": float(shadow.requests),
                },
                record={"shadow_verdict": "fail" if problems else "pass"},
            )
            if run.settings.manual_decision:
                run.await_decision()
                continue
            if problems:
                return run.roll_back(f"shadow run failed: {summary}")
            return run.promote(f"shadow run passed: {summary}")
