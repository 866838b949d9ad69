"""gRPC servicer for lorafleet.v1.GatewayService: protobuf <-> workflows and routing."""

from __future__ import annotations

from lorafleet.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import JobRpcs, job_status_to_pb
from services.common.database import Transactions
from services.common.jobqueue import default_worker_id, open_store
from services.common.jobs import Job
from services.common.server import RunningServer, create_server
from services.gateway.metrics import ArmTotals, MetricsRecorder
from services.gateway.records import WorkflowOutcome, WorkflowSpec, decode_outcome
from services.gateway.routing import Router
from services.gateway.shadow import Mirror
from services.gateway.state.migrations import upgrade_database as upgrade_state
from services.gateway.steps import STEPS
from services.gateway.workflow import Workflows

DEPENDENCIES = ("registry", "trainer", "merger", "validator", "inference")
# The gateway's job tables: gateway_jobs, gateway_job_events.
QUEUE = "gateway"


ROUTING_KEY_METADATA = "x-lorafleet-routing-key"
FORCED_ARM_METADATA = "x-lorafleet-arm"


def _routing(request, context) -> tuple[str, str]:
    """(routing key, forced arm): the request's field, else its metadata."""
    metadata = dict(context.invocation_metadata() or ())
    key = request.routing_key or metadata.get(ROUTING_KEY_METADATA, "")
    return str(key), str(metadata.get(FORCED_ARM_METADATA, ""))


DEFAULT_METRICS_WINDOW_S = 300


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


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, workflows: Workflows, router: Router) -> None:
        self._workflows = workflows
        self._router = router
        self._jobs = JobRpcs(workflows.engine, gateway_pb2, "WorkflowJob", job_to_pb)

    def RunWorkflow(self, request, context):
        return gateway_pb2.RunWorkflowResponse(
            job=job_to_pb(self._workflows.start(request))
        )

    def GetWorkflowJob(self, request, context):
        return self._jobs.get(request)

    def ListWorkflowJobs(self, request, context):
        return self._jobs.list(request)

    def CancelWorkflowJob(self, request, context):
        job = self._workflows.cancel(request.job_id)
        return gateway_pb2.CancelWorkflowJobResponse(job=job_to_pb(job))

    def ResumeWorkflow(self, request, context):
        job = self._workflows.resume(request.job_id)
        return gateway_pb2.ResumeWorkflowResponse(job=job_to_pb(job))

    def WatchWorkflowJob(self, request, context):
        yield from self._jobs.watch(request, context)

    def Deploy(self, request, context):
        deployment = self._router.deploy(
            request.deployment, request.model_id, request.adapter_id, request.reason
        )
        return gateway_pb2.DeployResponse(deployment=deployment)

    def Rollback(self, request, context):
        return gateway_pb2.RollbackResponse(
            deployment=self._router.rollback(request.deployment, request.reason)
        )

    def Generate(self, request, context):
        current, arm, output = self._router.generate(
            request.deployment, request.params, *_routing(request, context)
        )
        return gateway_pb2.GenerateResponse(
            output=output,
            model_id=arm.model_id,
            adapter_id=arm.adapter_id,
            deployment_revision=current.revision,
            arm=arm.name,
        )

    def GetDeploymentMetrics(self, request, context):
        window_s = request.window_s or DEFAULT_METRICS_WINDOW_S
        current, totals = self._router.metrics(request.deployment, window_s)
        return gateway_pb2.GetDeploymentMetricsResponse(
            deployment=current.name,
            window_s=window_s,
            arms=[arm_metrics_to_pb(arm, t) for arm, t in sorted(totals.items())],
        )

    def GenerateStream(self, request, context):
        for current, arm, chunk in self._router.generate_stream(
            request.deployment, request.params, *_routing(request, context)
        ):
            yield gateway_pb2.GenerateStreamResponse(
                chunk=chunk,
                model_id=arm.model_id,
                adapter_id=arm.adapter_id,
                arm=arm.name,
                deployment_revision=current.revision,
            )


def create(config: Config, port: int | None = None) -> RunningServer:
    store = open_store(config, QUEUE)
    # The gateway's own tables (metrics) live in the same database.
    upgrade_state(config.job_dsn(QUEUE))
    clients = {name: ServiceClient(name, config) for name in DEPENDENCIES}
    workflows = Workflows(config, clients, store)
    recorder = MetricsRecorder(
        Transactions(store.engine, what="the gateway database"),
        config.worker_id_of("gateway") or default_worker_id(),
    )
    mirror = Mirror(clients["inference"], recorder)
    router = Router(clients["registry"], clients["inference"], recorder, mirror)

    def register(server):
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            GatewayServicer(workflows, router), server
        )
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

    running = create_server("gateway", config, register, port)
    running.parts["workflows"] = workflows
    running.on_stop.append(lambda: workflows.engine.shutdown(config.grace_period_s))
    running.on_stop.extend([mirror.close, recorder.close])
    running.on_stop.extend(c.close for c in clients.values())
    running.on_stop.append(store.engine.dispose)
    return running
