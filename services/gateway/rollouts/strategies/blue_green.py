"""blue_green: the candidate is loaded and warmed up off to the side, then
takes all traffic in one write; the previous version stays loaded as a
STANDBY arm for `keep_previous_s`, so AbortRollout (or a failed analysis)
switches back instantly, with nothing to load."""

from __future__ import annotations

from lorafleet.v1 import common_pb2, inference_pb2
from services.common.errors import InvalidArgument, LorafleetError
from services.gateway.analysis import FAIL, analyze
from services.gateway.metrics import ArmTotals
from services.gateway.rollouts.controller import (
    STABLE_ROLE,
    STANDBY_ROLE,
    RolloutRun,
    target,
)
from services.gateway.rollouts.model import RolloutOutcome
from services.gateway.rollouts.settings import (
    FULL_WEIGHT,
    RolloutSettings,
    check_duration,
)
from services.gateway.rollouts.strategies.base import Strategy

STANDBY_ARM = "previous"
# The stable arm's recent traffic the new version is compared with.
REFERENCE_WINDOW_S = 300
WARMUP_TOKENS = 8


class BlueGreen(Strategy):
    name = "blue_green"
    summary = "load and warm up, switch all at once, keep the old one for rollback"
    arm = "stable"
    unique_arm = False

    def check(self, settings: RolloutSettings) -> None:
        bg = settings.blue_green
        if not 1 <= bg.warmup_requests <= 100:
            raise InvalidArgument(
                f"settings.blue_green.warmup_requests must be in [1, 100], got "
                f"{bg.warmup_requests}",
                field="settings.blue_green.warmup_requests",
            )
        if len(bg.warmup_prompt) > 4096:
            raise InvalidArgument(
                "settings.blue_green.warmup_prompt is over 4096 characters",
                field="settings.blue_green.warmup_prompt",
            )
        check_duration(bg.keep_previous_s, "settings.blue_green.keep_previous_s")

    def total_steps(self, settings: RolloutSettings) -> int:
        return 2

    def run(self, run: RolloutRun) -> RolloutOutcome:
        bg = run.settings.blue_green
        if not run.details.get("switched"):
            run.poll(wait=False)
            failure = self._warm_up(run, bg.warmup_requests, bg.warmup_prompt)
            if failure:
                return run.roll_back(failure)
            reference = run.recorder.totals(run.spec.deployment, REFERENCE_WINDOW_S)
            run.set_targets(
                [
                    target(run.spec.candidate, "stable", STABLE_ROLE, FULL_WEIGHT),
                    target(run.spec.stable, STANDBY_ARM, STANDBY_ROLE),
                ],
                FULL_WEIGHT,
                2,
                f"switched: {run.spec.candidate.label} serves all of "
                f"{run.spec.deployment}; {run.spec.stable.label} stays loaded as "
                f"arm {STANDBY_ARM!r} for {bg.keep_previous_s:g}s",
                switched=True,
                reference=reference.get("stable", ArmTotals()).to_dict(),
            )
        if "switch_mark" not in run.details:
            run.mark("switch_mark")
        reference = ArmTotals.from_dict(run.details.get("reference", {}))
        while True:
            run.poll()
            new = run.observed("switch_mark").get("stable", ArmTotals())
            verdict = analyze(reference, new, run.settings.analysis)
            if verdict.decision == FAIL:
                run.analysis_event(verdict, reference, new, force=True)
                return run.roll_back(
                    f"switched back to {run.spec.stable.label}: {verdict.reason}"
                )
            if run.elapsed("switch_mark") >= bg.keep_previous_s:
                verdict = analyze(reference, new, run.settings.analysis, step_done=True)
                run.analysis_event(verdict, reference, new, force=True)
                if verdict.decision == FAIL:
                    return run.roll_back(
                        f"switched back to {run.spec.stable.label}: {verdict.reason}"
                    )
                return run.promote(
                    f"served {new.requests} requests over the {bg.keep_previous_s:g}s "
                    "rollback window without failing analysis"
                )
            run.analysis_event(verdict, reference, new, force=False)

    def _warm_up(self, run: RolloutRun, count: int, prompt: str) -> str:
        """Loads the candidate and sends it `count` requests; "" if all
        answered, else why not (the deployment was never touched)."""
        candidate = run.spec.candidate
        try:
            run.inference.LoadModel(
                inference_pb2.LoadModelRequest(
                    model_id=candidate.model_id, adapter_id=candidate.adapter_id
                )
            )
            for _ in range(count):
                run.inference.Generate(
                    inference_pb2.InferenceServiceGenerateRequest(
                        model_id=candidate.model_id,
                        adapter_id=candidate.adapter_id,
                        params=common_pb2.GenerationParams(
                            prompt=prompt, max_new_tokens=WARMUP_TOKENS
                        ),
                    )
                )
        except LorafleetError as exc:
            return f"health check failed before the switch: {exc.code}: {exc.message}"
        run.event(
            "warmed_up",
            f"{candidate.label} loaded and answered {count} warm-up requests",
            record={"step": 1, "total_steps": 2},
        )
        return ""
