"""gRPC servicer for lorafleet.v1.GatewayService: protobuf <-> workflows and routing."""

from __future__ import annotations

from lorafleet.v1 import gateway_pb2, gateway_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import JobRpcs
from services.common.database import Transactions
from services.common.jobqueue import default_worker_id, open_store
from services.common.server import RunningServer, create_server
from services.gateway.convert import arm_metrics_to_pb, job_to_pb
from services.gateway.inference_pool import InferencePool
from services.gateway.metrics import MetricsRecorder
from services.gateway.rollout_convert import (
    event_to_pb,
    experiment_to_pb,
    rollout_to_pb,
    settings_from_pb,
)
from services.gateway.rollouts import service as rollout_service
from services.gateway.rollouts.service import Rollouts
from services.gateway.routing import Router
from services.gateway.shadow import Mirror
from services.gateway.state.migrations import upgrade_database as upgrade_state
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


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self, workflows: Workflows, router: Router, rollouts: Rollouts
    ) -> None:
        self._workflows = workflows
        self._router = router
        self._rollouts = rollouts
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
        self._rollouts.check_free(request.deployment, "deploying by hand")
        deployment = self._router.deploy(
            request.deployment, request.model_id, request.adapter_id, request.reason
        )
        return gateway_pb2.DeployResponse(deployment=deployment)

    def Rollback(self, request, context):
        self._rollouts.check_free(request.deployment, "rolling back by hand")
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

    # --- rollouts -------------------------------------------------------------------
    def StartRollout(self, request, context):
        job = self._rollouts.start(
            request.deployment,
            request.model_id,
            request.adapter_id,
            settings_from_pb(request.settings),
            force=request.force,
            reason=request.reason,
            request_id=request.request_id,
        )
        return gateway_pb2.StartRolloutResponse(rollout=rollout_to_pb(job))

    def GetRollout(self, request, context):
        job = self._rollouts.get(request.rollout_id)
        return gateway_pb2.GetRolloutResponse(rollout=rollout_to_pb(job))

    def ListRollouts(self, request, context):
        jobs, token = self._rollouts.list(
            request.deployment, request.page_size, request.page_token
        )
        return gateway_pb2.ListRolloutsResponse(
            rollouts=[rollout_to_pb(j) for j in jobs], next_page_token=token
        )

    def PauseRollout(self, request, context):
        job = self._rollouts.pause(request.rollout_id, True, request.reason)
        return gateway_pb2.PauseRolloutResponse(rollout=rollout_to_pb(job))

    def ResumeRollout(self, request, context):
        job = self._rollouts.pause(request.rollout_id, False, request.reason)
        return gateway_pb2.ResumeRolloutResponse(rollout=rollout_to_pb(job))

    def PromoteRollout(self, request, context):
        job = self._rollouts.promote(request.rollout_id, request.reason)
        return gateway_pb2.PromoteRolloutResponse(rollout=rollout_to_pb(job))

    def AbortRollout(self, request, context):
        job = self._rollouts.abort(request.rollout_id, request.reason)
        return gateway_pb2.AbortRolloutResponse(rollout=rollout_to_pb(job))

    def WatchRollout(self, request, context):
        for event, job in self._rollouts.watch(
            request.rollout_id, request.after_sequence, context.is_active
        ):
            yield gateway_pb2.WatchRolloutResponse(
                event=event_to_pb(event), rollout=rollout_to_pb(job)
            )

    def ConcludeExperiment(self, request, context):
        result, job = self._rollouts.conclude(request.rollout_id)
        return gateway_pb2.ConcludeExperimentResponse(
            result=experiment_to_pb(result), rollout=rollout_to_pb(job)
        )


def create(config: Config, port: int | None = None) -> RunningServer:
    clients: dict = {
        name: ServiceClient(name, config, caller="gateway")
        for name in DEPENDENCIES
        if name != "inference"
    }
    # Inference may run as several replicas: one pool routes across them all.
    # (First: a bad replica list stops start-up before any database work.)
    clients["inference"] = InferencePool.from_config(config, clients["registry"])
    store = open_store(config, QUEUE)
    # The gateway's own tables (metrics) live in the same database.
    upgrade_state(config.job_dsn(QUEUE))
    recorder = MetricsRecorder(
        Transactions(store.engine, what="the gateway database"),
        config.worker_id_of("gateway") or default_worker_id(),
    )
    mirror = Mirror(clients["inference"], recorder)
    router = Router(clients["registry"], clients["inference"], recorder, mirror)
    # Rollouts run on their own queue (rollout_jobs ...) in the same database.
    rollout_store = open_store(config, rollout_service.QUEUE, dsn=config.job_dsn(QUEUE))
    rollouts = Rollouts(
        config,
        clients["registry"],
        clients["inference"],
        rollout_store,
        Transactions(
            rollout_store.engine, what="the gateway database", retry_integrity=True
        ),
        recorder,
    )

    workflows = Workflows(config, clients, store, rollouts=rollouts)

    def register(server):
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(
            GatewayServicer(workflows, router, rollouts), server
        )
        return [gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name]

    running = create_server("gateway", config, register, port)
    running.parts["workflows"] = workflows
    running.parts["rollouts"] = rollouts
    running.on_stop.append(lambda: workflows.engine.shutdown(config.grace_period_s))
    running.on_stop.append(lambda: rollouts.shutdown(config.grace_period_s))
    running.on_stop.extend([mirror.close, recorder.close])
    running.on_stop.extend(c.close for c in clients.values())
    running.on_stop.append(store.engine.dispose)
    running.on_stop.append(rollout_store.engine.dispose)
    return running
