"""What every strategy's controller does: move weights, read metrics, obey
the operator, promote or roll back — once, across restarts.

A rollout is a job on the gateway's durable `rollout` queue. Everything it
has done is in the job's details (the step, the revision it wrote, the
metric snapshots its steps started from) and in its event log, so a gateway
that takes the job over (a restart, or another replica after the lease
lapsed) continues at the same step with the metrics collected so far. Every
write is idempotent: a deployment already at the wanted targets is left
alone, and writes are compare-and-set on the deployment's revision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.errors import Aborted, NotFound
from services.common.jobs import JobContext
from services.gateway.analysis import Verdict
from services.gateway.arms import MAX_STALE_S
from services.gateway.metrics import ArmTotals, MetricsRecorder
from services.gateway.rollouts.controls import ABORT, PROMOTE, Controls, RolloutControls
from services.gateway.rollouts.model import (
    AWAITING_DECISION,
    PAUSED,
    PROGRESSING,
    PROMOTED,
    ROLLED_BACK,
    RolloutOutcome,
    RolloutSpec,
    Version,
)
from services.gateway.rollouts.settings import FULL_WEIGHT

log = logging.getLogger(__name__)

STABLE_ROLE = common_pb2.TARGET_ROLE_STABLE
CANDIDATE_ROLE = common_pb2.TARGET_ROLE_CANDIDATE
SHADOW_ROLE = common_pb2.TARGET_ROLE_SHADOW
STANDBY_ROLE = common_pb2.TARGET_ROLE_STANDBY
MAX_REASON = 1000
# An analysis still undecided is reported at most this often (seconds).
PROGRESS_EVERY_S = 10.0
# How long after a weight change every replica routes by it: a router uses a
# cached deployment for at most MAX_STALE_S (services.gateway.routing), plus
# a read's time. Metrics are counted from then on, so requests routed by the
# old weights are never taken for the new arm's (arm names repeat).
ROUTING_SETTLE_S = MAX_STALE_S + 1.0

STRATEGY_ENUMS = {
    "replace": common_pb2.DEPLOYMENT_STRATEGY_REPLACE,
    "blue_green": common_pb2.DEPLOYMENT_STRATEGY_BLUE_GREEN,
    "canary": common_pb2.DEPLOYMENT_STRATEGY_CANARY,
    "ab_test": common_pb2.DEPLOYMENT_STRATEGY_AB,
    "shadow": common_pb2.DEPLOYMENT_STRATEGY_SHADOW,
}


class Finished(Exception):
    """Raised where the rollout ended (operator command, failed analysis)."""

    def __init__(self, outcome: RolloutOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


def target(version: Version, arm: str, role: int, weight: int = 0, mirror: int = 0):
    return common_pb2.DeploymentTarget(
        model_id=version.model_id,
        adapter_id=version.adapter_id,
        arm=arm,
        role=role,
        weight_bps=weight,
        mirror_bps=mirror,
    )


def _layout(targets: Any) -> set[tuple]:
    return {
        (t.arm, t.role, t.weight_bps, t.mirror_bps, t.model_id, t.adapter_id)
        for t in targets
    }


class RolloutRun:
    """One attempt at running a rollout: the strategies' toolbox."""

    def __init__(
        self,
        ctx: JobContext,
        spec: RolloutSpec,
        registry: Any,
        inference: Any,
        recorder: MetricsRecorder,
        controls: RolloutControls,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ctx = ctx
        self.spec = spec
        self.settings = spec.settings
        self.registry = registry
        self.inference = inference
        self.recorder = recorder
        self.controls = controls
        self.clock = clock
        self._waker = controls.waker(ctx.job.id)
        self._last_progress = 0.0

    @property
    def id(self) -> str:
        return self.ctx.job.id

    @property
    def details(self) -> dict[str, Any]:
        return self.ctx.details

    # --- events --------------------------------------------------------------------
    def event(
        self,
        kind: str,
        message: str,
        *,
        metrics: dict[str, float] | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Appends an event (kind, message, numbers) and saves `record` with it."""
        facts = dict(record or {})
        facts.setdefault("message", message[:MAX_REASON])
        weight = facts.get("weight_bps", self.details.get("weight_bps", 0))
        step = facts.get("step", self.details.get("step", 0))
        total = facts.get("total_steps", self.details.get("total_steps", 1))
        numbers = {"candidate_weight_bps": float(weight), **(metrics or {})}
        self.ctx.report(
            stage=kind,
            message=message[:MAX_REASON],
            progress=min(1.0, step / total) if total else 0.0,
            metrics=numbers,
            step=step,
            total_steps=total,
            record=facts,
        )
        log.info(
            "rollout %s (%s): %s: %s", self.id, self.spec.deployment, kind, message
        )

    def analysis_event(
        self, verdict: Verdict, stable: ArmTotals, candidate: ArmTotals, *, force: bool
    ) -> None:
        """Reports an analysis with its numbers: always when `force` (a step's
        end, a rollback), else at most every PROGRESS_EVERY_S."""
        now = self.clock()
        if not force and now - self._last_progress < PROGRESS_EVERY_S:
            return
        self._last_progress = now
        metrics = {
            "candidate_requests": float(candidate.requests),
            "stable_requests": float(stable.requests),
            "candidate_errors": float(sum(candidate.errors.values())),
            "stable_errors": float(sum(stable.errors.values())),
            "candidate_p95_ms": candidate.percentile_ms(0.95),
            "stable_p95_ms": stable.percentile_ms(0.95),
        }
        for check in verdict.checks:
            metrics[check.name] = check.value
            metrics[f"{check.name}.limit"] = check.threshold
            metrics[f"{check.name}.passed"] = 1.0 if check.passed else 0.0
        self.event(
            "analysis",
            f"{verdict.decision}: {verdict.reason}",
            metrics=metrics,
            record={
                "last_analysis": {
                    "decision": verdict.decision,
                    "reason": verdict.reason[:MAX_REASON],
                    "candidate_requests": verdict.canary_requests,
                    "checks": [
                        [c.name, c.value, c.threshold, c.passed] for c in verdict.checks
                    ],
                    "stable": stable.to_dict(),
                    "candidate": candidate.to_dict(),
                }
            },
        )

    # --- the deployment ------------------------------------------------------------
    def deployment(self) -> Any:
        return self.registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name=self.spec.deployment)
        ).deployment

    def write(self, targets: list[Any], reason: str) -> Any:
        """Puts the deployment at `targets` (compare-and-set on its revision;
        nothing is written when it is there already)."""
        while True:
            current = self.deployment()
            if _layout(current.targets) == _layout(targets):
                return current
            if self.spec.force:  # audited with every change it makes
                reason = f"{reason} [forced: {self.spec.reason}]"
            request = registry_pb2.PutDeploymentRequest(
                name=self.spec.deployment,
                targets=targets,
                strategy=STRATEGY_ENUMS[self.spec.strategy],
                reason=reason[: 2 * MAX_REASON],
                expected_revision=current.revision,
                output_format=current.output_format,
                blocked_phrases=list(current.blocked_phrases),
            )
            try:
                return self.registry.PutDeployment(request).deployment
            except Aborted:
                continue  # changed since read: read again

    def set_targets(
        self, targets: list[Any], weight: int, step: int, message: str, **record: Any
    ) -> Any:
        """Writes a new layout and reports it as a "weight" event (once: an
        attempt that repeats the write after a take-over reports nothing)."""
        deployment = self.write(targets, f"rollout {self.id}: {message}")
        reported = (self.details.get("weight_bps"), self.details.get("step")) == (
            weight,
            step,
        ) and self.details.get("revision") == deployment.revision
        self._waker.wait(ROUTING_SETTLE_S)  # an operator's command cuts it short
        self._waker.clear()
        if reported:
            return deployment
        self.event(
            "weight",
            message,
            record={
                "weight_bps": weight,
                "step": step,
                "revision": deployment.revision,
                **record,
            },
        )
        return deployment

    def stable_layout(self) -> list[Any]:
        return [target(self.spec.stable, "stable", STABLE_ROLE, FULL_WEIGHT)]

    def promoted_layout(self) -> list[Any]:
        return [target(self.spec.candidate, "stable", STABLE_ROLE, FULL_WEIGHT)]

    # --- metrics -------------------------------------------------------------------
    def mark(self, key: str) -> None:
        """Remembers the metrics as of now under `key`; `observed(key)` is
        then what happened since (durably, so a take-over keeps it)."""
        now = self.clock()
        since = self.recorder.window_start(now)
        arms = self.recorder.totals_since(self.spec.deployment, since)
        self.ctx.record(
            **{
                key: {
                    "since": since,
                    "at": now,
                    "arms": {arm: t.to_dict() for arm, t in arms.items()},
                }
            }
        )

    def observed(self, key: str) -> dict[str, ArmTotals]:
        mark = self.details[key]
        now = self.recorder.totals_since(self.spec.deployment, mark["since"])
        return {
            arm: totals.minus(ArmTotals.from_dict(mark["arms"].get(arm, {})))
            for arm, totals in now.items()
        }

    def elapsed(self, key: str) -> float:
        return max(0.0, self.clock() - self.details[key]["at"])

    # --- the operator --------------------------------------------------------------
    def poll(self, wait: bool = True) -> tuple[Controls, str]:
        """Waits a tick (or for a command), then reads the operator's controls.

        Returns them and "paused"/"resumed" when that changed since the last
        look (recorded as an event). Abort and promote end the rollout here.
        """
        if wait:
            self._waker.wait(self.settings.tick_s)
            self._waker.clear()
        self.ctx.check_cancelled()
        controls = self.controls.read(self.id)
        change = ""
        if controls.paused != bool(self.details.get("paused", False)):
            change = "paused" if controls.paused else "resumed"
            why = f": {controls.reason}" if controls.reason else ""
            self.event(
                change,
                f"{change} by the operator{why}",
                record={
                    "paused": controls.paused,
                    "phase": PAUSED if controls.paused else PROGRESSING,
                },
            )
        if controls.command == ABORT:
            raise Finished(
                self.roll_back(
                    f"aborted by the operator: {controls.reason or 'no reason given'}"
                )
            )
        if controls.command == PROMOTE:
            raise Finished(
                self.promote(
                    f"promoted by the operator: {controls.reason or 'no reason given'}"
                )
            )
        return controls, change

    def await_decision(self) -> None:
        """An experiment ended under manual_decision: the operator promotes or
        aborts (`poll` carries either out); until then nothing changes."""
        self.event(
            "awaiting_decision",
            "waiting for PromoteRollout or AbortRollout",
            record={"phase": AWAITING_DECISION},
        )

    # --- endings -------------------------------------------------------------------
    def promote(self, reason: str) -> RolloutOutcome:
        deployment = self.write(
            self.promoted_layout(),
            f"rollout {self.id} promoted {self.spec.candidate.label}: {reason}",
        )
        alias = self.move_alias(reason)
        self.event(
            "promoted",
            f"{reason}{alias}",
            record={
                "weight_bps": FULL_WEIGHT,
                "revision": deployment.revision,
                "step": self.details.get("total_steps", 1),
            },
        )
        return RolloutOutcome(PROMOTED, f"{reason}{alias}")

    def roll_back(
        self, reason: str, metrics: dict[str, float] | None = None
    ) -> RolloutOutcome:
        """All traffic back to stable; the alias stays where it was. The
        registry's audit log records the reason (with the analysis' numbers)."""
        deployment = self.write(
            self.stable_layout(), f"rollout {self.id} rolled back: {reason}"
        )
        self.event(
            "rolled_back",
            reason,
            metrics=metrics,
            record={"weight_bps": 0, "revision": deployment.revision},
        )
        return RolloutOutcome(ROLLED_BACK, reason)

    def move_alias(self, reason: str) -> str:
        """Moves the promote alias to the candidate by compare-and-set from
        where it was when the rollout started; a suffix for the message."""
        alias, candidate = self.settings.alias, self.spec.candidate
        if not alias:
            return ""
        try:
            now = self.registry.ResolveAlias(
                registry_pb2.ResolveAliasRequest(
                    name=candidate.artifact_name, alias=alias
                )
            ).artifact.id
        except NotFound:
            now = ""
        if now == candidate.artifact_id:
            return f"; {candidate.artifact_name}@{alias} -> {candidate.label}"
        try:
            self.registry.SetAlias(
                registry_pb2.SetAliasRequest(
                    artifact_id=candidate.artifact_id,
                    alias=alias,
                    expected_artifact_id=self.spec.alias_before,
                    reason=f"rollout {self.id} promoted: {reason}"[:MAX_REASON],
                )
            )
        except Aborted:
            return (
                f"; {candidate.artifact_name}@{alias} was moved by someone else "
                "since the rollout started, so it was left as it is"
            )
        return f"; {candidate.artifact_name}@{alias} -> {candidate.label}"
