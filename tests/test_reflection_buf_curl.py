"""External clients reach every service with JSON and reflection only (buf curl)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

BUF = Path(__file__).resolve().parent.parent / "node_modules" / ".bin" / "buf"


def buf_curl(address: str, method: str, body: dict) -> dict:
    assert BUF.exists(), "buf is missing: run `make setup` (npm install)"
    out = subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "-d",
            json.dumps(body),
            f"http://{address}/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout or "{}")


@pytest.mark.parametrize(
    "service", ["registry", "trainer", "merger", "validator", "inference", "gateway"]
)
def test_health_by_reflection(suite, service):
    reply = buf_curl(suite.address(service), "grpc.health.v1.Health/Check", {})
    assert reply == {"status": "SERVING"}


def test_real_methods_by_reflection(suite, workflow, base_model):
    result = workflow[1][-1].job.result
    artifact = buf_curl(
        suite.address("registry"),
        "lorafleet.v1.RegistryService/GetArtifact",
        {"id": base_model.id},
    )["artifact"]
    assert (
        artifact["name"] == "tiny-llama"
        and artifact["kind"] == "ARTIFACT_KIND_BASE_MODEL"
    )
    train_jobs = buf_curl(
        suite.address("trainer"),
        "lorafleet.v1.TrainerService/ListTrainJobs",
        {"pageSize": 50},
    )
    assert any(
        j.get("result", {}).get("adapterId") == result.adapter_id
        for j in train_jobs["jobs"]
    )
    merge_jobs = buf_curl(
        suite.address("merger"), "lorafleet.v1.MergerService/ListMergeJobs", {}
    )
    assert any(
        j.get("result", {}).get("mergedModelId") == result.merged_model_id
        for j in merge_jobs["jobs"]
    )
    validations = buf_curl(
        suite.address("validator"),
        "lorafleet.v1.ValidatorService/ListValidationJobs",
        {},
    )
    assert any(
        j.get("report", {}).get("id") == result.report.id for j in validations["jobs"]
    )
    reply = buf_curl(
        suite.address("gateway"),
        "lorafleet.v1.GatewayService/Generate",
        {"deployment": "orders", "params": {"prompt": "hi", "maxNewTokens": 3}},
    )
    assert reply["modelId"] == result.merged_model_id
    assert int(reply["output"]["completionTokens"]) >= 1
    # After the Generate: other tests sharing the suite load models too, and
    # inference keeps max_loaded_models (least recently used leave).
    loaded = buf_curl(
        suite.address("inference"), "lorafleet.v1.InferenceService/ListLoadedModels", {}
    )
    assert result.merged_model_id in {m["modelId"] for m in loaded["models"]}
