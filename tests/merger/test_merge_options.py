"""StartMergeJob's options over real gRPC: shards, gate settings, quantized
exports, QLoRA adapters, and what happens when a check fails."""

from __future__ import annotations

import math
from pathlib import Path

import grpc
import pytest
import torch

from lorafleet.v1 import common_pb2, merger_pb2, registry_pb2
from services.common.convert import struct
from tests.merger.helpers import make_adapter

GGUF_Q8_0 = merger_pb2.QUANTIZED_FORMAT_GGUF_Q8_0
GGUF_Q4_0 = merger_pb2.QUANTIZED_FORMAT_GGUF_Q4_0
BNB_NF4 = merger_pb2.QUANTIZED_FORMAT_BNB_NF4


@pytest.fixture(scope="module")
def adapters(suite, base_model):
    """A plain LoRA adapter and one recorded as trained on an NF4 base (QLoRA)."""
    registry = suite.stub("registry")
    incoming = suite.config.data_dir / "incoming-merge-options"
    found = {}
    for name, extra in (("opt-lora", {}), ("opt-qlora", {"base_quantization": "nf4"})):
        make_adapter(Path(base_model.local_path), incoming / name, seed=len(found))
        found[name] = registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_ADAPTER,
                name=name,
                source_path=str(incoming / name),
                metadata=struct(
                    {
                        "base_model_id": base_model.id,
                        "base_model_digest": base_model.digest,
                        **extra,
                    }
                ),
            ),
            timeout=60,
        ).artifact
    return found


def _run(suite, **fields) -> merger_pb2.WatchMergeJobResponse:
    merger = suite.stub("merger")
    job = merger.StartMergeJob(
        merger_pb2.StartMergeJobRequest(**fields), timeout=60
    ).job
    updates = list(
        merger.WatchMergeJob(
            merger_pb2.WatchMergeJobRequest(job_id=job.status.job_id), timeout=300
        )
    )
    return updates


def _registered(suite, name: str) -> list:
    return list(
        suite.stub("registry")
        .ListArtifacts(registry_pb2.ListArtifactsRequest(name=name), timeout=30)
        .artifacts
    )


def _artifact(suite, artifact_id: str):
    return (
        suite.stub("registry")
        .GetArtifact(registry_pb2.GetArtifactRequest(id=artifact_id), timeout=30)
        .artifact
    )


def test_sharded_merge_with_gguf_and_nf4_exports(suite, adapters):
    updates = _run(
        suite,
        adapter_id=adapters["opt-lora"].id,
        output_name="opt-exported",
        max_shard_size=150_000,
        exports=[
            merger_pb2.QuantizedExport(format=GGUF_Q8_0),
            merger_pb2.QuantizedExport(format=BNB_NF4, max_perplexity_ratio=1.5),
        ],
    )
    final = updates[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    result = final.result
    assert result.shards >= 3
    assert result.gate["relative_logit_diff"] < 1e-5
    by_format = {e.format: e for e in result.exports}
    assert set(by_format) == {GGUF_Q8_0, BNB_NF4}
    for export in result.exports:
        assert export.size_bytes < export.unquantized_size_bytes
        assert export.size_reduction == pytest.approx(
            1 - export.size_bytes / export.unquantized_size_bytes
        )
        assert math.isfinite(export.perplexity) and export.unquantized_perplexity > 0
        assert export.perplexity_change == pytest.approx(
            export.perplexity / export.unquantized_perplexity - 1
        )
    assert by_format[GGUF_Q8_0].size_reduction > 0.6  # fp32 -> 8.5 bits a weight
    assert abs(by_format[GGUF_Q8_0].perplexity_change) < 0.01
    assert "export" in {u.event.stage for u in updates}

    merged = _artifact(suite, result.merged_model_id)
    files = {f.path for f in merged.files}
    n = result.shards
    assert {
        f"model-00001-of-{n:05d}.safetensors",
        "model.safetensors.index.json",
    } <= files
    assert "quantized/gguf_q8_0/model.gguf" in files
    assert {
        "quantized/bnb_nf4/model.safetensors",
        "quantized/bnb_nf4/config.json",
    } <= files
    meta = merged.metadata
    assert meta["shards"] == n and meta["gate"]["relative_logit_diff"] < 1e-5
    exported = {e["format"]: e for e in meta["quantized_exports"]}
    assert exported["gguf_q8_0"]["size_bytes"] == by_format[GGUF_Q8_0].size_bytes

    # the GGUF file is a working model: transformers reads it back (de-quantised)
    from transformers import AutoModelForCausalLM

    root = Path(merged.local_path)
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    with torch.inference_mode():
        full = AutoModelForCausalLM.from_pretrained(str(root)).eval()(ids).logits
        gguf = (
            AutoModelForCausalLM.from_pretrained(
                str(root / "quantized/gguf_q8_0"), gguf_file="model.gguf"
            )
            .eval()(ids)
            .logits
        )
    assert float((gguf - full).abs().max()) < 0.02 * float(full.abs().max())


def test_skipped_gate_is_recorded(suite, adapters):
    updates = _run(
        suite,
        adapter_id=adapters["opt-lora"].id,
        output_name="opt-ungated",
        gate=merger_pb2.MergeGateConfig(skip=True),
    )
    final = updates[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    assert dict(final.result.gate) == {"skipped": True}
    assert "gate skipped on request" in [u.event.message for u in updates]
    merged = _artifact(suite, final.result.merged_model_id)
    assert dict(merged.metadata["gate"]) == {"skipped": True}


def test_failing_gate_fails_the_job_with_numbers_and_registers_nothing(suite, adapters):
    updates = _run(
        suite,
        adapter_id=adapters["opt-lora"].id,
        output_name="opt-too-strict",
        output_dtype=merger_pb2.OUTPUT_DTYPE_BFLOAT16,
        gate=merger_pb2.MergeGateConfig(logit_tolerance=1e-9),
    )
    status = updates[-1].job.status
    assert status.state == common_pb2.JOB_STATE_FAILED
    assert status.error.code == "FAILED_PRECONDITION"
    assert "merge correctness gate failed" in status.error.message
    assert "relative_logit_diff" in status.error.message
    assert "tolerance 1e-09" in status.error.message
    assert _registered(suite, "opt-too-strict") == []
    staging = suite.config.staging_dir
    assert not any("merge-" in p.name for p in staging.iterdir())


def test_export_over_its_perplexity_limit_fails_and_registers_nothing(suite, adapters):
    updates = _run(
        suite,
        adapter_id=adapters["opt-lora"].id,
        output_name="opt-q4-strict",
        exports=[merger_pb2.QuantizedExport(format=GGUF_Q4_0, max_perplexity_ratio=1)],
        gate=merger_pb2.MergeGateConfig(skip=True),  # the export check is tested
    )
    status = updates[-1].job.status
    assert status.state == common_pb2.JOB_STATE_FAILED
    assert status.error.code == "FAILED_PRECONDITION"
    message = status.error.message
    assert "GGUF_Q4_0 perplexity" in message and "max 1.0" in message
    assert "nothing was registered" in message
    assert _registered(suite, "opt-q4-strict") == []


def test_an_error_mid_write_leaves_nothing_behind(suite, adapters, monkeypatch):
    from services.merger import write_lanes

    real = write_lanes.HashedWriter._write_item
    calls = []

    def failing(self, state, item):
        if item[0] == "data":  # a header or tensor bytes, about to be written
            calls.append(len(item[1]))
            if len(calls) == 7:
                raise OSError(28, "No space left on device")
        return real(self, state, item)

    monkeypatch.setattr(write_lanes.HashedWriter, "_write_item", failing)
    updates = _run(
        suite,
        adapter_id=adapters["opt-lora"].id,
        output_name="opt-disk-full",
        max_shard_size=100_000,
    )
    status = updates[-1].job.status
    assert status.state == common_pb2.JOB_STATE_FAILED
    assert status.error.code == "RESOURCE_EXHAUSTED"
    assert "ran out of disk space (No space left on device)" in status.error.message
    assert len(calls) == 7
    assert _registered(suite, "opt-disk-full") == []
    assert [p for p in suite.config.staging_dir.iterdir() if "merge-" in p.name] == []


def test_registry_refuses_files_that_changed_after_writing(
    suite, adapters, monkeypatch
):
    from services.merger import finish
    from services.merger.gate import GateReport

    def tampering_gate(spec):
        with open(Path(spec["merged"]) / "config.json", "a") as fh:
            fh.write(" ")  # what a bad disk or a stray writer would do
        return GateReport(passed=True, checks={"tampered": True})

    monkeypatch.setattr(finish, "check_merge", tampering_gate)
    updates = _run(
        suite, adapter_id=adapters["opt-lora"].id, output_name="opt-tampered"
    )
    status = updates[-1].job.status
    assert status.state == common_pb2.JOB_STATE_FAILED
    assert status.error.code == "DATA_LOSS", status.error.message
    assert "expected_digest" in status.error.message
    assert _registered(suite, "opt-tampered") == []


def test_qlora_adapter_is_merged_with_its_measured_rounding_error(suite, adapters):
    updates = _run(
        suite, adapter_id=adapters["opt-qlora"].id, output_name="opt-from-qlora"
    )
    final = updates[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    (note,) = final.result.notes
    assert "NF4-quantized base" in note and "full-precision base" in note
    gate = final.result.gate
    assert gate["base_quantization"] == "nf4"
    assert 0 < gate["quantized_base_relative_logit_diff"] < 1
    assert f"{gate['quantized_base_max_abs_logit_diff']:.3g} at most" in note
    assert 0 < gate["quantized_base_top1_agreement"] <= 1
    assert f"{gate['quantized_base_top1_agreement']:.1%} of positions" in note
    assert note in [u.event.message for u in updates]
    merged = _artifact(suite, final.result.merged_model_id)
    assert list(merged.metadata["notes"]) == [note]
    assert merged.metadata["base_quantization"] == "nf4"


def _start_error(suite, **fields) -> grpc.RpcError:
    merger = suite.stub("merger")
    before = len(merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest()).jobs)
    with pytest.raises(grpc.RpcError) as info:
        merger.StartMergeJob(merger_pb2.StartMergeJobRequest(**fields), timeout=60)
    after = len(merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest()).jobs)
    assert after == before, "a refused Start must not create a job"
    return info.value


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"max_shard_size": -1}, ["max_shard_size must be a positive"]),
        (
            {"gate": merger_pb2.MergeGateConfig(max_perplexity_factor=0.5)},
            ["gate.max_perplexity_factor must be >= 1", "got 0.5"],
        ),
        (
            {"gate": merger_pb2.MergeGateConfig(logit_tolerance=2)},
            ["gate.logit_tolerance must be in (0, 1]", "got 2.0"],
        ),
        (
            {"gate": merger_pb2.MergeGateConfig(logit_tolerance=float("nan"))},
            ["gate.logit_tolerance"],
        ),
        (
            {"exports": [merger_pb2.QuantizedExport()]},
            ["needs a format", "GGUF_Q8_0", "BNB_NF4"],
        ),
        ({"exports": [merger_pb2.QuantizedExport(format=99)]}, ["'#99' is unknown"]),
        (
            {"exports": [merger_pb2.QuantizedExport(format=GGUF_Q8_0)] * 2},
            ["GGUF_Q8_0 is requested twice"],
        ),
        (
            {
                "exports": [
                    merger_pb2.QuantizedExport(format=BNB_NF4, max_perplexity_ratio=0.9)
                ]
            },
            ["max_perplexity_ratio must be a finite number >= 1", "got 0.9"],
        ),
    ],
)
def test_bad_options_are_invalid_argument(suite, adapters, fields, words):
    err = _start_error(
        suite, adapter_id=adapters["opt-lora"].id, output_name="opt-bad", **fields
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    for word in words:
        assert word in err.details()


def test_unknown_base_quantization_is_a_failed_precondition(suite, adapters):
    registry = suite.stub("registry")
    odd = registry.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(
            kind=common_pb2.ARTIFACT_KIND_ADAPTER,
            name="opt-int3-lora",
            source_path=adapters["opt-lora"].local_path,
            metadata=struct(
                {
                    "base_quantization": "int3",
                    "base_model_id": adapters["opt-lora"].metadata["base_model_id"],
                    "base_model_digest": adapters["opt-lora"].metadata[
                        "base_model_digest"
                    ],
                }
            ),
        ),
        timeout=60,
    ).artifact
    err = _start_error(
        suite,
        adapter_id=odd.id,
        base_model_id=adapters["opt-lora"].metadata["base_model_id"],
        output_name="opt-odd",
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "base_quantization='int3'" in err.details() and "nf4" in err.details()
