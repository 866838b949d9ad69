"""Bad input gets a precise status and message, and no server process dies of it."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lorafleet.v1 import (
    common_pb2,
    gateway_pb2,
    inference_pb2,
    merger_pb2,
    registry_pb2,
    trainer_pb2,
    validator_pb2,
)
from services.cli.models import import_model
from tests.conftest import TRAIN
from tests.suite import ORDER


def expect(code: grpc.StatusCode, call, *words: str) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    for word in words:
        assert word in err.value.details(), err.value.details()
    return err.value.details()


@pytest.fixture(scope="module")
def other_base(suite, tiny_model_factory):
    """A second base model (gpt2 family): adapters of tiny-llama don't fit it."""
    return import_model(
        tiny_model_factory("gpt2"),
        "tiny-gpt2",
        suite.config.staging_dir,
        suite.stub("registry"),
    )


def workflow_request(base_model, dataset, **overrides):
    request = gateway_pb2.RunWorkflowRequest(
        base_model_id=base_model.id, dataset_path=str(dataset), name="bad"
    )
    request.train_config.CopyFrom(TRAIN)
    for key, value in overrides.items():
        setattr(request, key, value)
    return request


def test_unknown_ids_are_not_found(suite, base_model):
    registry, gateway = suite.stub("registry"), suite.stub("gateway")
    expect(
        grpc.StatusCode.NOT_FOUND,
        lambda: registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id="nope"), timeout=10
        ),
        "nope",
    )
    expect(
        grpc.StatusCode.NOT_FOUND,
        lambda: gateway.RunWorkflow(
            gateway_pb2.RunWorkflowRequest(
                base_model_id="missing-base", dataset_id="x", name="n"
            ),
            timeout=10,
        ),
        "missing-base",
    )
    expect(
        grpc.StatusCode.NOT_FOUND,
        lambda: suite.stub("trainer").GetTrainJob(
            trainer_pb2.GetTrainJobRequest(job_id="train-0"), timeout=10
        ),
        "train-0",
    )
    expect(
        grpc.StatusCode.NOT_FOUND,
        lambda: suite.stub("merger").StartMergeJob(
            merger_pb2.StartMergeJobRequest(adapter_id="ghost", output_name="m"),
            timeout=10,
        ),
        "ghost",
    )
    expect(
        grpc.StatusCode.NOT_FOUND,
        lambda: gateway.Generate(
            gateway_pb2.GenerateRequest(
                deployment="nobody-deployed-this",
                params=common_pb2.GenerationParams(prompt="hi"),
            ),
            timeout=10,
        ),
        "nobody-deployed-this",
    )


def test_negative_learning_rate_is_invalid(suite, base_model, dataset_copy):
    request = workflow_request(base_model, dataset_copy)
    request.train_config.learning_rate = -0.001
    message = expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: suite.stub("gateway").RunWorkflow(request, timeout=120),
        "learning_rate",
    )
    assert "-0.001" in message


def test_empty_and_malformed_datasets_are_invalid(suite, base_model):
    folder = suite.config.data_dir / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jsonl").write_text("")
    (folder / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    (folder / "noanswer.jsonl").write_text('{"instruction": "a", "output": ""}\n' * 3)
    gateway = suite.stub("gateway")
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: gateway.RunWorkflow(
            workflow_request(base_model, folder / "empty.jsonl"), timeout=30
        ),
        "empty",
    )
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: gateway.RunWorkflow(
            workflow_request(base_model, folder / "broken.jsonl"), timeout=30
        ),
        "line 2",
        "invalid JSON",
    )
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: gateway.RunWorkflow(
            workflow_request(base_model, folder / "noanswer.jsonl"), timeout=30
        ),
        "line 1",
        "'output'",
    )


def test_paths_outside_the_roots_and_pickles_are_refused(suite, tmp_path):
    registry = suite.stub("registry")
    outside = tmp_path / "data.jsonl"
    outside.write_text('{"text": "x"}\n')
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name="x",
                source_path=str(outside),
            ),
            timeout=10,
        ),
        "outside",
    )
    pickled = suite.config.data_dir / "pickled-model"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not-really")
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_BASE_MODEL,
                name="pickled",
                source_path=str(pickled),
            ),
            timeout=10,
        ),
        "pytorch_model.bin",
    )
    expect(
        grpc.StatusCode.NOT_FOUND,
        lambda: registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name="x",
                source_path=str(suite.config.data_dir / "missing.jsonl"),
            ),
            timeout=10,
        ),
        "missing.jsonl",
    )


def test_adapter_on_a_different_base_is_a_failed_precondition(
    suite, workflow, other_base
):
    result = workflow[1][-1].job.result
    expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: suite.stub("merger").StartMergeJob(
            merger_pb2.StartMergeJobRequest(
                adapter_id=result.adapter_id,
                base_model_id=other_base.id,
                output_name="mix",
            ),
            timeout=30,
        ),
        result.adapter_id,
    )
    expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: suite.stub("validator").StartValidationJob(
            validator_pb2.StartValidationJobRequest(
                model_id=other_base.id,
                adapter_id=result.adapter_id,
                dataset_id=result.dataset_id,
            ),
            timeout=30,
        ),
        other_base.id,
    )
    expect(
        grpc.StatusCode.FAILED_PRECONDITION,
        lambda: suite.stub("inference").Generate(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=other_base.id,
                adapter_id=result.adapter_id,
                params=common_pb2.GenerationParams(prompt="hi"),
            ),
            timeout=60,
        ),
        "trained on",
    )


def test_bad_generation_parameters_are_invalid(suite, base_model):
    inference = suite.stub("inference")
    for params, field in (
        (common_pb2.GenerationParams(), "prompt"),
        (common_pb2.GenerationParams(prompt="x", temperature=-1), "temperature"),
        (
            common_pb2.GenerationParams(prompt="x", max_new_tokens=10**6),
            "max_new_tokens",
        ),
    ):
        expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            lambda p=params: inference.Generate(
                inference_pb2.InferenceServiceGenerateRequest(
                    model_id=base_model.id, params=p
                ),
                timeout=30,
            ),
            field,
        )


def test_every_service_still_serving_after_bad_input(suite):
    for name in ORDER:
        with grpc.insecure_channel(suite.address(name)) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
