"""RunWorkflow with a rollout strategy: the deploy step canaries the new
merged model against what the deployment serves and ends with the rollout."""

from __future__ import annotations

import threading

from lorafleet.v1 import common_pb2, gateway_pb2
from tests.conftest import LENIENT, TRAIN


def test_a_workflow_ends_with_a_canary(suite, workflow, dataset_copy, base_model):
    gateway = suite.stub("gateway")
    # Its own deployment, serving the shared workflow's model: other tests
    # count on "orders" serving that one.
    first = workflow[1][-1].job.result.merged_model_id
    gateway.Deploy(
        gateway_pb2.DeployRequest(deployment="orders-canaried", model_id=first),
        timeout=60,
    )
    train = common_pb2.TrainConfig()
    train.CopyFrom(TRAIN)
    train.seed = 8  # another version of the same task
    job = gateway.RunWorkflow(
        gateway_pb2.RunWorkflowRequest(
            base_model_id=base_model.id,
            dataset_path=str(dataset_copy),
            name="orders-v2",
            deployment="orders-canaried",
            train_config=train,
            gates=LENIENT,
            validation_examples=4,
            validation_max_new_tokens=8,
            strategy=common_pb2.DEPLOYMENT_STRATEGY_CANARY,
            rollout=gateway_pb2.RolloutSettings(
                canary=gateway_pb2.CanarySettings(
                    steps_bps=[5000], step_interval_s=0.001
                ),
                analysis=gateway_pb2.AnalysisSettings(min_requests=3),
                tick_s=0.05,
            ),
            request_id="workflow-with-canary",
        ),
        timeout=60,
    ).job
    done = threading.Event()

    def traffic() -> None:  # the canary needs requests to judge
        params = common_pb2.GenerationParams(prompt="Order for Ana", max_new_tokens=2)
        while not done.is_set():
            gateway.Generate(
                gateway_pb2.GenerateRequest(
                    deployment="orders-canaried", params=params
                ),
                timeout=60,
            )

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        events = list(
            gateway.WatchWorkflowJob(
                gateway_pb2.WatchWorkflowJobRequest(job_id=job.status.job_id),
                timeout=900,
            )
        )
    finally:
        done.set()
        sender.join(120)
    final = events[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status
    deploy = next(s for s in final.steps if s.name == "deploy")
    assert deploy.job_id.startswith("rollout-") and "promoted" in deploy.message
    rollout = gateway.GetRollout(
        gateway_pb2.GetRolloutRequest(rollout_id=deploy.job_id), timeout=10
    ).rollout
    assert rollout.state == gateway_pb2.ROLLOUT_STATE_PROMOTED
    assert rollout.candidate.model_id == final.result.merged_model_id
    assert final.result.deployment.model_id == final.result.merged_model_id
