"""Workflows survive their services: a gateway taken over mid-training, a
trainer restarted under a running workflow, a service gone past the patience
(then ResumeWorkflow), idempotent RunWorkflow, cancel reaching the sub-job.

A suite of its own (services are stopped and started again here), in process,
on its own data directory; "killing" the gateway abandons its workflow engine
(nothing is written, as with SIGKILL) before its server stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lorafleet.client import Client
from lorafleet.v1 import common_pb2, gateway_pb2, registry_pb2, trainer_pb2
from services.cli.models import import_model
from tests.common.jobqueue.support import wait_for
from tests.conftest import LENIENT, TRAIN
from tests.suite import start_suite
from tests.trainer.runs import child_pids

SUCCEEDED = common_pb2.JOB_STATE_SUCCEEDED


@pytest.fixture(scope="module")
def durable(tmp_path_factory, tiny_model_dir, demo_dataset_path):
    suite = start_suite(tmp_path_factory.mktemp("durable"), worker_id="durable-host")
    try:
        base = import_model(
            tiny_model_dir,
            "tiny-llama",
            suite.config.staging_dir,
            suite.stub("registry"),
        )
        data = suite.config.data_dir / "datasets" / "orders.jsonl"
        data.parent.mkdir(parents=True)
        shutil.copy(demo_dataset_path, data)
        yield suite, base, data
    finally:
        suite.stop()


def request(base, data, name: str, *, steps: int = 4, **fields):
    config = common_pb2.TrainConfig()
    config.CopyFrom(TRAIN)
    config.max_steps = steps
    config.checkpoint_steps = 20
    return gateway_pb2.RunWorkflowRequest(
        base_model_id=base.id,
        dataset_path=str(data),
        name=name,
        train_config=config,
        gates=LENIENT,
        validation_examples=2,
        validation_max_new_tokens=4,
        **fields,
    )


def watch(suite, job_id: str, after: int = 0) -> list:
    return list(
        suite.stub("gateway").WatchWorkflowJob(
            gateway_pb2.WatchWorkflowJobRequest(job_id=job_id, after_sequence=after),
            timeout=600,
        )
    )


def wait_for_training(suite, job_id: str, step: int = 1) -> None:
    for update in suite.stub("gateway").WatchWorkflowJob(
        gateway_pb2.WatchWorkflowJobRequest(job_id=job_id), timeout=600
    ):
        if update.event.stage == "train" and update.event.step >= step:
            return
    raise AssertionError("the workflow ended before training got going")


def train_jobs_named(suite, adapter_name: str) -> list:
    jobs = (
        suite.stub("trainer")
        .ListTrainJobs(trainer_pb2.ListTrainJobsRequest(page_size=1000), timeout=10)
        .jobs
    )
    return [j for j in jobs if j.request.adapter_name == adapter_name]


def artifacts_named(suite, name: str) -> list:
    return list(
        suite.stub("registry")
        .ListArtifacts(registry_pb2.ListArtifactsRequest(name=name), timeout=10)
        .artifacts
    )


def train_events(suite, job_id: str) -> list[str]:
    return [
        r.event.message
        for r in suite.stub("trainer").WatchTrainJob(
            trainer_pb2.WatchTrainJobRequest(job_id=job_id), timeout=60
        )
    ]


def test_a_gateway_killed_mid_training_finishes_the_workflow_once(durable):
    suite, base, data = durable
    started = (
        suite.stub("gateway")
        .RunWorkflow(request(base, data, "dur-gw", steps=12), timeout=60)
        .job
    )
    job_id, train_id = started.status.job_id, started.train_job_id
    assert train_id  # the response names the training it started
    wait_for_training(suite, job_id)
    # A client following the workflow through the SDK rides out the restart.
    client = Client(gateway=suite.address("gateway"))
    followed: list = []
    follower = threading.Thread(
        target=lambda: followed.extend(client.watch_workflow(job_id))
    )
    follower.start()

    # SIGKILL: the workflow stays RUNNING under this gateway's lease.
    suite.servers["gateway"].parts["workflows"].engine.abandon()
    suite.servers["gateway"].server.stop(0)
    suite.start_service("gateway")  # the same worker id takes it back at once

    stream = watch(suite, job_id)
    final = stream[-1].job
    follower.join(600)
    client.close()
    assert [u.event.sequence for u in followed] == [u.event.sequence for u in stream]
    assert final.status.state == SUCCEEDED, final.status.error
    assert final.attempt == 2 and final.train_job_id == train_id
    assert [s.name for s in final.steps] == [
        "register_dataset",
        "train",
        "merge",
        "validate",
        "gate",
        "alias",
        "deploy",
    ]
    assert all(s.state == SUCCEEDED for s in final.steps)
    # Once: one training, one adapter, one merged model, one deployment revision.
    assert [j.status.job_id for j in train_jobs_named(suite, "dur-gw-lora")] == [
        train_id
    ]
    assert len(artifacts_named(suite, "dur-gw-lora")) == 1
    assert [a.id for a in artifacts_named(suite, "dur-gw")] == [
        final.result.merged_model_id
    ]
    assert final.result.deployment.revision == 1
    # Every event of the training was relayed exactly once, across the take-over.
    relayed = [r.event.message for r in stream if r.event.stage == "train"]
    relayed = [m.removeprefix("train: ") for m in relayed if m.startswith("train: ")]
    assert relayed == train_events(suite, train_id)
    sequences = [r.event.sequence for r in stream]
    assert sequences == list(range(1, len(sequences) + 1))


def test_a_trainer_restart_under_a_workflow_is_followed_through(durable):
    suite, base, data = durable
    started = (
        suite.stub("gateway")
        .RunWorkflow(request(base, data, "dur-tr", steps=30), timeout=60)
        .job
    )
    # Freeze the training child as soon as it exists, so the trainer is
    # stopped mid-training however loaded the machine is (the stopping
    # trainer kills it after its grace period).
    wait_for(lambda: child_pids(started.train_job_id), timeout_s=600)
    for pid in child_pids(started.train_job_id):
        os.kill(pid, signal.SIGSTOP)
    suite.stop_service("trainer")  # its job goes back to the queue
    suite.start_service("trainer")  # ... and resumes there (attempt 2)
    final = watch(suite, started.status.job_id)[-1].job
    assert final.status.state == SUCCEEDED, final.status.error
    assert final.attempt == 1  # the gateway never stopped: it reconnected
    train = (
        suite.stub("trainer")
        .GetTrainJob(
            trainer_pb2.GetTrainJobRequest(job_id=started.train_job_id), timeout=10
        )
        .job
    )
    assert train.attempt == 2 and train.status.state == SUCCEEDED
    assert len(train_jobs_named(suite, "dur-tr-lora")) == 1
    assert len(artifacts_named(suite, "dur-tr-lora")) == 1


def test_a_service_gone_past_patience_fails_and_resume_finishes(durable):
    suite, base, data = durable
    workflows = suite.servers["gateway"].parts["workflows"]
    limit = workflows.patience.limit_s
    workflows.patience.limit_s = 1.0
    suite.stop_service("merger")
    try:
        job = (
            suite.stub("gateway")
            .RunWorkflow(request(base, data, "dur-res"), timeout=60)
            .job
        )
        failed = watch(suite, job.status.job_id)[-1].job
    finally:
        workflows.patience.limit_s = limit
        suite.start_service("merger")
    assert failed.status.state == common_pb2.JOB_STATE_FAILED
    assert failed.status.error.code == "UNAVAILABLE"
    assert "merger has been unreachable" in failed.status.error.message
    states = {s.name: s.state for s in failed.steps}
    assert states["train"] == SUCCEEDED
    assert states["merge"] == common_pb2.JOB_STATE_FAILED
    assert states["deploy"] == common_pb2.JOB_STATE_QUEUED

    gateway = suite.stub("gateway")
    resumed = gateway.ResumeWorkflow(
        gateway_pb2.ResumeWorkflowRequest(job_id=job.status.job_id), timeout=30
    ).job
    assert resumed.status.state in (
        common_pb2.JOB_STATE_QUEUED,
        common_pb2.JOB_STATE_RUNNING,
    )
    final = watch(suite, job.status.job_id)[-1].job
    assert final.status.state == SUCCEEDED, final.status.error
    assert final.train_job_id == failed.train_job_id  # training was not redone
    assert final.merge_job_id and final.attempt == 2
    assert len(train_jobs_named(suite, "dur-res-lora")) == 1
    with pytest.raises(grpc.RpcError) as err:
        gateway.ResumeWorkflow(
            gateway_pb2.ResumeWorkflowRequest(job_id=job.status.job_id), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "only a FAILED or CANCELLED workflow" in err.value.details()


def test_run_workflow_is_idempotent_and_cancel_reaches_the_training(durable):
    suite, base, data = durable
    gateway = suite.stub("gateway")
    first = gateway.RunWorkflow(
        request(base, data, "dur-idem", steps=5000, request_id="idem-1"), timeout=60
    ).job
    again = gateway.RunWorkflow(
        request(base, data, "dur-idem", steps=5000, request_id="idem-1"), timeout=60
    ).job
    assert again.status.job_id == first.status.job_id
    assert again.train_job_id == first.train_job_id
    with pytest.raises(grpc.RpcError) as err:
        gateway.RunWorkflow(
            request(base, data, "dur-idem", steps=7, request_id="idem-1"), timeout=60
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert _bad_fields(err.value) == ["request_id"]
    assert len(train_jobs_named(suite, "dur-idem-lora")) == 1

    wait_for_training(suite, first.status.job_id)
    gateway.CancelWorkflowJob(
        gateway_pb2.CancelWorkflowJobRequest(job_id=first.status.job_id), timeout=30
    )
    final = watch(suite, first.status.job_id)[-1].job
    assert final.status.state == common_pb2.JOB_STATE_CANCELLED
    wait_for(
        lambda: (
            suite.stub("trainer")
            .GetTrainJob(
                trainer_pb2.GetTrainJobRequest(job_id=first.train_job_id), timeout=10
            )
            .job.status.state
            == common_pb2.JOB_STATE_CANCELLED
        )
    )
    assert artifacts_named(suite, "dur-idem-lora") == []


def _bad_fields(error: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(error)
    fields = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields += [v.field for v in bad.field_violations]
    return fields
