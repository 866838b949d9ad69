"""The whole lifecycle over real gRPC: six in-process services, a tiny real model."""

from __future__ import annotations

import grpc
import pytest

from lorafleet.v1 import common_pb2, gateway_pb2, registry_pb2, trainer_pb2
from tests.conftest import TRAIN, run_workflow


def test_workflow_succeeds_and_streams_every_stage(workflow):
    job, events, _ = workflow
    final = events[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    stages = {e.event.stage for e in events}
    assert {"train", "merge", "validate", "deploy"} <= stages
    sequences = [e.event.sequence for e in events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    train_steps = [
        e.event.step for e in events if e.event.stage == "train" and e.event.step
    ]
    assert max(train_steps) == 4


def test_registry_records_lineage_of_every_artifact(suite, workflow, base_model):
    result = workflow[1][-1].job.result
    registry = suite.stub("registry")
    adapter = registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=result.adapter_id)
    ).artifact
    merged = registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=result.merged_model_id, verify=True)
    ).artifact
    assert adapter.kind == common_pb2.ARTIFACT_KIND_ADAPTER
    assert {f.path for f in adapter.files} >= {
        "adapter_model.safetensors",
        "adapter_config.json",
    }
    assert adapter.metadata["base_model_id"] == base_model.id
    assert adapter.metadata["rank"] == 4
    assert adapter.metrics["steps"] == 4 and adapter.metrics["train_loss"] > 0
    assert merged.kind == common_pb2.ARTIFACT_KIND_MERGED_MODEL
    assert "validated" in merged.aliases
    assert all(len(f.sha256) == 64 for f in merged.files)
    lineage = registry.GetLineage(registry_pb2.GetLineageRequest(id=merged.id))
    edges = {(e.parent_id, e.child_id, e.relation) for e in lineage.edges}
    assert (adapter.id, merged.id, "adapter") in edges
    assert (base_model.id, adapter.id, "base_model") in edges
    assert (result.dataset_id, adapter.id, "dataset") in edges
    report = registry.GetValidationReport(
        registry_pb2.GetValidationReportRequest(id=result.report.id)
    ).report
    assert report.passed and report.candidate_id == merged.id
    assert report.baseline_id == base_model.id
    assert report.candidate.perplexity < report.baseline.perplexity
    deployment = registry.GetDeployment(
        registry_pb2.GetDeploymentRequest(name="orders")
    ).deployment
    assert deployment.model_id == merged.id and deployment.revision == 1


def test_gateway_generates_with_the_deployed_model(suite, workflow):
    result = workflow[1][-1].job.result
    gateway = suite.stub("gateway")
    params = common_pb2.GenerationParams(
        prompt="Order for Ana: 2 x socks, ship to Porto.", max_new_tokens=6
    )
    reply = gateway.Generate(
        gateway_pb2.GenerateRequest(deployment="orders", params=params), timeout=60
    )
    assert reply.model_id == result.merged_model_id
    assert reply.output.completion_tokens >= 1
    assert reply.output.finish_reason in (
        common_pb2.FINISH_REASON_EOS,
        common_pb2.FINISH_REASON_LENGTH,
    )
    chunks = list(
        gateway.GenerateStream(
            gateway_pb2.GenerateStreamRequest(deployment="orders", params=params),
            timeout=60,
        )
    )
    assert "".join(c.chunk.text_delta for c in chunks) == reply.output.text  # greedy


def test_one_workflow_is_one_trace_across_services(workflow):
    job, _, spans = workflow
    trace_id = int(job.status.trace_id, 16)
    services = {
        s.attributes.get("rpc.service")
        for s in spans
        if s.context.trace_id == trace_id and s.kind.name == "SERVER"
    }
    assert {
        "lorafleet.v1.GatewayService",
        "lorafleet.v1.TrainerService",
        "lorafleet.v1.MergerService",
        "lorafleet.v1.ValidatorService",
        "lorafleet.v1.RegistryService",
        "lorafleet.v1.InferenceService",
    } <= services
    # The jobs' own spans, the training's above all, belong to the same trace.
    final = workflow[1][-1].job
    job_spans = {
        s.attributes.get("lorafleet.job_id"): s
        for s in spans
        if s.name.endswith(".job") and s.attributes.get("lorafleet.job_id")
    }
    for job_id in (
        job.status.job_id,
        final.train_job_id,
        final.merge_job_id,
        final.validation_job_id,
    ):
        assert job_spans[job_id].context.trace_id == trace_id, job_id
    train_span = job_spans[final.train_job_id]
    span_ids = {s.context.span_id: s for s in spans}
    # Its parent chain leads to the RunWorkflow call's span.
    parent = span_ids.get(train_span.parent.span_id)
    assert parent is not None and parent.context.trace_id == trace_id


def test_failed_gate_blocks_deployment(suite, workflow, base_model, dataset_copy):
    before = (
        suite.stub("registry")
        .GetDeployment(registry_pb2.GetDeploymentRequest(name="orders"))
        .deployment
    )
    strict = common_pb2.ValidationGates(min_score=0.99, max_latency_ratio=100.0)
    _, events = run_workflow(
        suite,
        gateway_pb2.RunWorkflowRequest(
            base_model_id=base_model.id,
            dataset_path=str(dataset_copy),
            name="orders-strict",
            deployment="orders",
            train_config=TRAIN,
            gates=strict,
            validation_examples=2,
            validation_max_new_tokens=4,
        ),
    )
    final = events[-1].job
    assert final.status.state == common_pb2.JOB_STATE_FAILED
    assert final.status.error.code == "FAILED_PRECONDITION"
    assert "validation gates failed" in final.status.error.message
    assert "exact_match" in final.status.error.message
    assert not final.result.report.passed and final.result.merged_model_id
    after = (
        suite.stub("registry")
        .GetDeployment(registry_pb2.GetDeploymentRequest(name="orders"))
        .deployment
    )
    assert after.model_id == before.model_id and after.revision == before.revision


def test_a_forced_workflow_deploys_past_failed_gates_and_the_reason_is_audited(
    suite, workflow, base_model, dataset_copy
):
    # The deployment serves a version now: the validation compares with it.
    strict = common_pb2.ValidationGates(
        min_score=0.99, max_latency_ratio=100.0, min_overall_score=0.99
    )
    request = gateway_pb2.RunWorkflowRequest(
        base_model_id=base_model.id,
        dataset_path=str(dataset_copy),
        name="orders-forced",
        deployment="orders",
        train_config=TRAIN,
        gates=strict,
        validation_examples=2,
        validation_max_new_tokens=4,
        validation_mode="quick",
        force=True,
    )
    with pytest.raises(grpc.RpcError) as err:  # force needs its reason
        suite.stub("gateway").RunWorkflow(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "force_reason" in err.value.details()
    request.force_reason = "hotfix approved by on-call"
    _, events = run_workflow(suite, request)
    final = events[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    report = final.result.report
    assert not report.passed and report.mode == "quick"
    assert report.deployment == "orders"
    assert any(c.target == "production" for c in report.comparisons)
    gate = next(s for s in final.steps if s.name == "gate")
    assert "FORCED" in gate.message and "min_score" in gate.message
    deployment = (
        suite.stub("registry")
        .GetDeployment(registry_pb2.GetDeploymentRequest(name="orders"))
        .deployment
    )
    assert deployment.model_id == final.result.merged_model_id
    assert "hotfix approved by on-call" in deployment.reason
    events = (
        suite.stub("registry")
        .ListAuditEvents(
            registry_pb2.ListAuditEventsRequest(target="orders"), timeout=30
        )
        .events
    )
    assert any("forced past failed validation report" in str(e.after) for e in events)


def test_rollback_restores_the_previous_version(suite, workflow, base_model):
    gateway = suite.stub("gateway")
    moved = gateway.Deploy(
        gateway_pb2.DeployRequest(deployment="rollback-demo", model_id=base_model.id),
        timeout=60,
    ).deployment
    merged = workflow[1][-1].job.result.merged_model_id
    moved = gateway.Deploy(
        gateway_pb2.DeployRequest(deployment="rollback-demo", model_id=merged),
        timeout=60,
    ).deployment
    assert moved.previous_model_id == base_model.id
    back = gateway.Rollback(
        gateway_pb2.RollbackRequest(deployment="rollback-demo"), timeout=60
    ).deployment
    assert back.model_id == base_model.id and back.revision == moved.revision + 1
    with pytest.raises(grpc.RpcError) as err:
        gateway.Rollback(gateway_pb2.RollbackRequest(deployment="no-such"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_cancelling_a_workflow_cancels_its_training(suite, base_model, dataset_copy):
    gateway, trainer = suite.stub("gateway"), suite.stub("trainer")
    long_run = common_pb2.TrainConfig()
    long_run.CopyFrom(TRAIN)
    long_run.max_steps = 5000
    job = gateway.RunWorkflow(
        gateway_pb2.RunWorkflowRequest(
            base_model_id=base_model.id,
            dataset_path=str(dataset_copy),
            name="orders-cancelled",
            train_config=long_run,
        ),
        timeout=60,
    ).job
    events = gateway.WatchWorkflowJob(
        gateway_pb2.WatchWorkflowJobRequest(job_id=job.status.job_id), timeout=300
    )
    for update in events:
        if update.event.stage == "train" and update.event.step >= 2:
            gateway.CancelWorkflowJob(
                gateway_pb2.CancelWorkflowJobRequest(job_id=job.status.job_id),
                timeout=10,
            )
            break
    final = list(events)[-1].job
    assert final.status.state == common_pb2.JOB_STATE_CANCELLED
    train = trainer.GetTrainJob(
        trainer_pb2.GetTrainJobRequest(job_id=final.train_job_id), timeout=10
    ).job
    assert train.status.state == common_pb2.JOB_STATE_CANCELLED
    assert not train.result.adapter_id
    adapters = suite.stub("registry").ListArtifacts(
        registry_pb2.ListArtifactsRequest(name="orders-cancelled-lora"), timeout=10
    )
    assert list(adapters.artifacts) == []


def test_training_runs_are_recorded_and_part_of_the_lineage(
    suite, workflow, base_model
):
    result = workflow[1][-1].job.result
    registry = suite.stub("registry")
    run = registry.GetTrainingRun(
        registry_pb2.GetTrainingRunRequest(id=result.adapter_id), timeout=10
    ).training_run
    assert run.adapter_id == result.adapter_id and run.seed == 7
    assert (
        run.base_model_id == base_model.id
        and run.base_model_digest == base_model.digest
    )
    assert run.dataset_id == result.dataset_id and run.dataset_digest.startswith(
        "sha256:"
    )
    assert run.config["rank"] == 4 and run.config["learning_rate"] == 5e-3
    assert run.environment["torch"] and run.metrics["steps"] == 4
    by_id = registry.GetTrainingRun(
        registry_pb2.GetTrainingRunRequest(id=run.id), timeout=10
    ).training_run
    assert by_id == run
    lineage = registry.GetLineage(
        registry_pb2.GetLineageRequest(id=result.merged_model_id), timeout=10
    )
    assert run.id in {r.id for r in lineage.training_runs}
    listed = registry.ListTrainingRuns(
        registry_pb2.ListTrainingRunsRequest(dataset_id=result.dataset_id), timeout=10
    ).training_runs
    assert run.id in {r.id for r in listed}
    assert all(r.dataset_id == result.dataset_id for r in listed)
    with pytest.raises(grpc.RpcError) as err:
        registry.GetTrainingRun(
            registry_pb2.GetTrainingRunRequest(id=base_model.id), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "has no training run" in err.value.details()


def test_dataset_versions_record_rows_schema_and_task(suite, workflow):
    result = workflow[1][-1].job.result
    dataset = (
        suite.stub("registry")
        .GetArtifact(registry_pb2.GetArtifactRequest(id=result.dataset_id), timeout=10)
        .artifact
    )
    assert dataset.metadata["rows"] == 320 and dataset.metadata["invalid_rows"] == 0
    assert dict(dataset.metadata["schema"]) == {
        "input": ["string"],
        "instruction": ["string"],
        "output": ["string"],
    }
    assert dataset.metadata["task_type"] == "instruction"
    assert dataset.digest.startswith("sha256:")
