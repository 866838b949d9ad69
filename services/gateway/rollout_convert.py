"""Protobuf <-> rollout domain objects, at the servicer's edge."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from lorafleet.v1 import common_pb2, gateway_pb2
from services.common.convert import job_status_to_pb
from services.common.jobs import Job, JobEvent, JobState
from services.gateway.analysis import AnalysisSettings
from services.gateway.convert import arm_metrics_to_pb
from services.gateway.metrics import ArmTotals
from services.gateway.rollouts import strategies
from services.gateway.rollouts.experiment import ExperimentOutcome
from services.gateway.rollouts.model import (
    PAUSED,
    RolloutOutcome,
    RolloutSpec,
    Version,
)
from services.gateway.rollouts.settings import (
    AbTestConfig,
    BlueGreenConfig,
    CanaryConfig,
    RolloutSettings,
    ShadowConfig,
)

STATES = {
    "PENDING": gateway_pb2.ROLLOUT_STATE_PENDING,
    "PROGRESSING": gateway_pb2.ROLLOUT_STATE_PROGRESSING,
    "PAUSED": gateway_pb2.ROLLOUT_STATE_PAUSED,
    "AWAITING_DECISION": gateway_pb2.ROLLOUT_STATE_AWAITING_DECISION,
    "PROMOTED": gateway_pb2.ROLLOUT_STATE_PROMOTED,
    "ROLLED_BACK": gateway_pb2.ROLLOUT_STATE_ROLLED_BACK,
    "FAILED": gateway_pb2.ROLLOUT_STATE_FAILED,
}


def settings_from_pb(pb: Any) -> RolloutSettings:
    a = pb.analysis
    return RolloutSettings(
        strategy=pb.strategy,
        canary=CanaryConfig(
            steps_bps=tuple(pb.canary.steps_bps),
            step_interval_s=pb.canary.step_interval_s,
        ),
        ab_test=AbTestConfig(
            candidate_weight_bps=pb.ab_test.candidate_weight_bps,
            duration_s=pb.ab_test.duration_s,
            sample_size=pb.ab_test.sample_size,
            confidence=pb.ab_test.confidence,
        ),
        shadow=ShadowConfig(
            mirror_bps=pb.shadow.mirror_bps,
            duration_s=pb.shadow.duration_s,
            sample_size=pb.shadow.sample_size,
            min_agreement=pb.shadow.min_agreement,
        ),
        blue_green=BlueGreenConfig(
            warmup_requests=pb.blue_green.warmup_requests,
            warmup_prompt=pb.blue_green.warmup_prompt,
            keep_previous_s=pb.blue_green.keep_previous_s,
        ),
        analysis=AnalysisSettings(
            max_error_rate=a.max_error_rate,
            max_latency_ratio=a.max_latency_ratio,
            min_quality=a.min_quality,
            max_length_ratio=a.max_length_ratio,
            min_requests=a.min_requests,
            false_rollback_rate=a.false_rollback_rate,
            tolerance=a.tolerance,
        ),
        promote_alias=pb.promote_alias,
        manual_decision=pb.manual_decision,
        tick_s=pb.tick_s,
    )


def settings_to_pb(s: RolloutSettings) -> gateway_pb2.RolloutSettings:
    return gateway_pb2.RolloutSettings(
        strategy=s.strategy,
        canary=gateway_pb2.CanarySettings(
            steps_bps=list(s.canary.steps_bps),
            step_interval_s=s.canary.step_interval_s,
        ),
        ab_test=gateway_pb2.AbTestSettings(**vars(s.ab_test)),
        shadow=gateway_pb2.ShadowSettings(**vars(s.shadow)),
        blue_green=gateway_pb2.BlueGreenSettings(**vars(s.blue_green)),
        analysis=gateway_pb2.AnalysisSettings(**vars(s.analysis)),
        promote_alias=s.promote_alias,
        manual_decision=s.manual_decision,
        tick_s=s.tick_s,
    )


def _target(version: Version, arm: str, role: int) -> common_pb2.DeploymentTarget:
    return common_pb2.DeploymentTarget(
        model_id=version.model_id,
        adapter_id=version.adapter_id,
        digest=version.digest,
        arm=arm,
        role=role,
    )


def state_of(job: Job) -> int:
    if job.state == JobState.QUEUED:
        return STATES["PENDING"]
    if job.state == JobState.RUNNING:
        if job.details.get("paused"):
            return STATES[PAUSED]
        return STATES.get(job.details.get("phase", ""), STATES["PROGRESSING"])
    if job.state == JobState.SUCCEEDED and isinstance(job.result, RolloutOutcome):
        return STATES[job.result.state]
    return STATES["FAILED"]


def experiment_to_pb(e: ExperimentOutcome) -> gateway_pb2.ExperimentResult:
    return gateway_pb2.ExperimentResult(
        metric=e.metric,
        arms=[
            gateway_pb2.ExperimentArm(
                arm=a.arm,
                requests=a.requests,
                success_rate=a.success_rate,
                success_rate_low=a.low,
                success_rate_high=a.high,
                latency_p50_ms=a.latency_p50_ms,
                latency_p95_ms=a.latency_p95_ms,
                mean_output_chars=a.mean_output_chars,
            )
            for a in e.arms
        ],
        winner=e.winner,
        significant=e.significant,
        p_value=e.p_value,
        summary=e.summary,
        confidence=e.confidence,
    )


def rollout_to_pb(job: Job) -> gateway_pb2.Rollout:
    spec: RolloutSpec = job.spec
    details = job.details
    strategy = strategies.STRATEGIES.get(spec.strategy)
    arm = strategy().arm_of(job.id) if strategy else "canary"
    pb = gateway_pb2.Rollout(
        id=job.id,
        deployment=spec.deployment,
        strategy=spec.strategy,
        state=state_of(job),
        stable=_target(spec.stable, "stable", common_pb2.TARGET_ROLE_STABLE),
        candidate=_target(spec.candidate, arm, common_pb2.TARGET_ROLE_CANDIDATE),
        candidate_weight_bps=int(details.get("weight_bps", 0)),
        step=int(details.get("step", 0)),
        total_steps=int(details.get("total_steps", 1)),
        settings=settings_to_pb(spec.settings),
        message=(
            job.result.reason
            if isinstance(job.result, RolloutOutcome)
            else job.error_message or details.get("message", job.message)
        ),
        status=job_status_to_pb(job),
        validation_report_id=spec.report_id,
        forced=spec.force,
        reason=spec.reason,
        deployment_revision=int(details.get("revision", 0)),
        attempt=job.attempt,
    )
    last = details.get("last_analysis")
    if last:
        pb.last_analysis.CopyFrom(
            gateway_pb2.AnalysisResult(
                decision=last["decision"],
                reason=last["reason"],
                candidate_requests=int(last["candidate_requests"]),
                checks=[
                    gateway_pb2.AnalysisCheck(
                        name=n, value=v, threshold=t, passed=bool(p)
                    )
                    for n, v, t, p in last.get("checks", [])
                ],
                stable=arm_metrics_to_pb("stable", ArmTotals.from_dict(last["stable"])),
                candidate=arm_metrics_to_pb(
                    arm, ArmTotals.from_dict(last["candidate"])
                ),
            )
        )
    if details.get("experiment"):
        pb.experiment.CopyFrom(
            experiment_to_pb(ExperimentOutcome.from_dict(details["experiment"]))
        )
    return pb


def event_to_pb(event: JobEvent) -> gateway_pb2.RolloutEvent:
    time = Timestamp()
    time.FromNanoseconds(int(event.time * 1e9))
    metrics = dict(event.metrics)
    # The controller's events carry the weight; the others are the job
    # queue's own (queued, started by a gateway, taken over, failed).
    ours = "candidate_weight_bps" in metrics
    weight = int(metrics.pop("candidate_weight_bps", 0))
    return gateway_pb2.RolloutEvent(
        sequence=event.sequence,
        time=time,
        kind=event.stage if ours else "job",
        message=event.message,
        candidate_weight_bps=weight,
        step=int(event.step),
        metrics=metrics,
    )
