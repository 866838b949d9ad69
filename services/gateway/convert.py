"""Protobuf <-> gateway domain objects (workflows, metrics), at the edge."""

from __future__ import annotations

from lorafleet.v1 import common_pb2, gateway_pb2
from services.common.convert import job_status_to_pb
from services.common.jobs import Job
from services.gateway.metrics import ArmTotals
from services.gateway.records import WorkflowOutcome, WorkflowSpec, decode_outcome
from services.gateway.steps import STEPS


def arm_metrics_to_pb(arm: str, t: ArmTotals) -> gateway_pb2.ArmMetrics:
    return gateway_pb2.ArmMetrics(
        arm=arm,
        requests=t.requests,
        errors=dict(t.errors),
        latency_p50_ms=t.percentile_ms(0.50),
        latency_p95_ms=t.percentile_ms(0.95),
        latency_p99_ms=t.percentile_ms(0.99),
        completion_tokens=t.completion_tokens,
        empty_outputs=t.empty_outputs,
        invalid_json=t.invalid_json,
        blocked_outputs=t.blocked_outputs,
        mean_output_chars=t.output_chars / t.successes if t.successes else 0.0,
        shadow=t.shadow,
        agreements=t.agreements,
        shadow_dropped=t.shadow_dropped,
    )


def steps_to_pb(job: Job) -> list[gateway_pb2.WorkflowStep]:
    recorded = job.details.get("steps", {})
    skip_deploy = job.spec.request.skip_deploy
    return [
        gateway_pb2.WorkflowStep(
            name=name,
            state=common_pb2.JobState.Value(
                f"JOB_STATE_{recorded.get(name, {}).get('state', 'QUEUED')}"
            ),
            job_id=recorded.get(name, {}).get("job_id", ""),
            output=recorded.get(name, {}).get("output", ""),
            message=recorded.get(name, {}).get("message", ""),
        )
        for name in STEPS
        if not (name == "deploy" and skip_deploy)
    ]


def job_to_pb(job: Job) -> gateway_pb2.WorkflowJob:
    spec: WorkflowSpec = job.spec
    steps = steps_to_pb(job)
    sub_jobs = {s.name: s.job_id for s in steps}
    request = gateway_pb2.RunWorkflowRequest()
    request.CopyFrom(spec.request)
    pb = gateway_pb2.WorkflowJob(
        status=job_status_to_pb(job),
        request=request,
        train_job_id=sub_jobs.get("train", ""),
        merge_job_id=sub_jobs.get("merge", ""),
        validation_job_id=sub_jobs.get("validate", ""),
        steps=steps,
        attempt=job.attempt,
        worker_id=job.worker_id,
    )
    outcome: WorkflowOutcome | None = job.result
    if outcome is None and job.details.get("outcome"):
        outcome = decode_outcome(job.details["outcome"])
    if outcome is not None:
        pb.result.dataset_id = outcome.dataset_id
        pb.result.adapter_id = outcome.adapter_id
        pb.result.merged_model_id = outcome.merged_model_id
        pb.result.train_metrics.update(outcome.train_metrics)
        if outcome.report is not None:
            pb.result.report.CopyFrom(outcome.report)
        if outcome.deployment is not None:
            pb.result.deployment.CopyFrom(outcome.deployment)
    return pb
