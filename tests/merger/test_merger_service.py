"""MergerService over real gRPC, against the real registry service."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import grpc
import pytest

from lorafleet.v1 import (
    common_pb2,
    merger_pb2,
    merger_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.common.config import load_config
from services.common.convert import struct
from tests.merger.helpers import make_adapter, max_difference

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER
TOLERANCE = 1e-6


@dataclasses.dataclass
class World:
    data_dir: Path
    registry: registry_pb2_grpc.RegistryServiceStub
    merger: merger_pb2_grpc.MergerServiceStub
    base: common_pb2.Artifact
    other_base: common_pb2.Artifact
    adapter: common_pb2.Artifact
    reference: dict


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir, tiny_model_factory):
    from services.merger.server import create as create_merger
    from services.registry.server import create as create_registry

    data_dir = tmp_path_factory.mktemp("merger-service") / "data"
    config = load_config(env={}, auth_mode="disabled", data_dir=data_dir, port=0)
    registry_server = create_registry(config, port=0)
    config = dataclasses.replace(config, registry_address=registry_server.address)
    merger_server = create_merger(config, port=0)
    channels = [
        grpc.insecure_channel(s.address) for s in (registry_server, merger_server)
    ]
    registry = registry_pb2_grpc.RegistryServiceStub(channels[0])

    def register(kind, name, src, metadata=None):
        return registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=kind,
                name=name,
                source_path=str(src),
                metadata=struct(metadata or {}),
            )
        ).artifact

    incoming = data_dir / "incoming"
    shutil.copytree(tiny_model_dir, incoming / "llama")
    shutil.copytree(tiny_model_factory("gpt2"), incoming / "gpt2")
    base = register(BASE_MODEL, "tiny-llama", incoming / "llama")
    other = register(BASE_MODEL, "tiny-gpt2", incoming / "gpt2")
    reference = make_adapter(
        Path(base.local_path), incoming / "adapter", seed=11, use_dora=True
    )
    adapter = register(
        ADAPTER,
        "support-lora",
        incoming / "adapter",
        {"base_model_id": base.id, "base_model_digest": base.digest},
    )
    yield World(
        data_dir,
        registry,
        merger_pb2_grpc.MergerServiceStub(channels[1]),
        base,
        other,
        adapter,
        reference,
    )
    for channel in channels:
        channel.close()
    merger_server.stop(0)
    registry_server.stop(0)


def _watch_to_end(world: World, job_id: str) -> list[merger_pb2.WatchMergeJobResponse]:
    stream = world.merger.WatchMergeJob(
        merger_pb2.WatchMergeJobRequest(job_id=job_id), timeout=60
    )
    return list(stream)


def test_merge_job_registers_exact_merged_model(world):
    start = world.merger.StartMergeJob(
        merger_pb2.StartMergeJobRequest(
            adapter_id=world.adapter.id,
            output_name="support-merged",
            output_dtype=merger_pb2.OUTPUT_DTYPE_SAME,
            tags={"team": "support"},
        )
    )
    job_id = start.job.status.job_id
    assert start.job.request.base_model_id == world.base.id  # defaulted from metadata
    events = _watch_to_end(world, job_id)
    final = events[-1]
    assert final.event.state == common_pb2.JOB_STATE_SUCCEEDED, final.job.status.error
    assert [e.event.sequence for e in events] == list(range(1, len(events) + 1))
    progress = [e.event.progress for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert {"merge", "register"} <= {e.event.stage for e in events}
    result = final.job.result
    assert result.tensors_merged == 14 and result.tensors_total == 21
    assert result.max_abs_delta > 0

    merged = world.registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=result.merged_model_id)
    ).artifact
    assert merged.kind == common_pb2.ARTIFACT_KIND_MERGED_MODEL
    assert merged.name == "support-merged" and dict(merged.tags) == {"team": "support"}
    meta = dict(merged.metadata)
    assert meta["method"] == "lora" and meta["use_dora"] is True
    assert meta["adapter_digest"] == world.adapter.digest
    assert meta["base_digest"] == world.base.digest
    assert meta["rank"] == 4 and meta["scale"] == 1.5
    diffs = max_difference(Path(merged.local_path), world.reference)
    assert max(diffs.values()) <= TOLERANCE
    assert {f.path for f in merged.files} >= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
    }

    lineage = world.registry.GetLineage(registry_pb2.GetLineageRequest(id=merged.id))
    parents = {
        (e.parent_id, e.relation) for e in lineage.edges if e.child_id == merged.id
    }
    assert parents == {(world.adapter.id, "adapter"), (world.base.id, "base_model")}
    staging = world.data_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())

    got = world.merger.GetMergeJob(merger_pb2.GetMergeJobRequest(job_id=job_id)).job
    assert got.result.merged_model_id == merged.id
    listed = world.merger.ListMergeJobs(
        merger_pb2.ListMergeJobsRequest(state=common_pb2.JOB_STATE_SUCCEEDED)
    ).jobs
    assert job_id in [j.status.job_id for j in listed]


def test_bfloat16_output_changes_config_dtype(world):
    start = world.merger.StartMergeJob(
        merger_pb2.StartMergeJobRequest(
            adapter_id=world.adapter.id,
            base_model_id=world.base.id,
            output_name="support-merged-bf16",
            output_dtype=merger_pb2.OUTPUT_DTYPE_BFLOAT16,
        )
    )
    final = _watch_to_end(world, start.job.status.job_id)[-1]
    assert final.event.state == common_pb2.JOB_STATE_SUCCEEDED, final.job.status.error
    assert final.job.request.output_dtype == merger_pb2.OUTPUT_DTYPE_BFLOAT16
    merged = world.registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=final.job.result.merged_model_id)
    ).artifact
    config = (Path(merged.local_path) / "config.json").read_text()
    assert '"dtype": "bfloat16"' in config


def _start_error(world: World, **fields) -> grpc.RpcError:
    before = len(world.merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest()).jobs)
    with pytest.raises(grpc.RpcError) as info:
        world.merger.StartMergeJob(merger_pb2.StartMergeJobRequest(**fields))
    after = len(world.merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest()).jobs)
    assert after == before, "a refused Start must not create a job"
    return info.value


def test_missing_fields_are_invalid_argument(world):
    err = _start_error(world, output_name="x")
    assert (
        err.code() == grpc.StatusCode.INVALID_ARGUMENT and "adapter_id" in err.details()
    )
    err = _start_error(world, adapter_id=world.adapter.id)
    assert (
        err.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "output_name" in err.details()
    )
    err = _start_error(world, adapter_id=world.adapter.id, output_name="bad name!")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = _start_error(
        world, adapter_id=world.adapter.id, output_name="ok", output_dtype=99
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "dtype" in err.details()


def test_unknown_ids_are_not_found(world):
    err = _start_error(world, adapter_id="no-such-adapter", output_name="x")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = _start_error(
        world,
        adapter_id=world.adapter.id,
        base_model_id="no-such-base",
        output_name="x",
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        world.merger.GetMergeJob(merger_pb2.GetMergeJobRequest(job_id="merge-nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_wrong_base_and_wrong_kind_fail_precondition(world):
    err = _start_error(
        world,
        adapter_id=world.adapter.id,
        base_model_id=world.other_base.id,
        output_name="x",
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        f"adapter {world.adapter.id} was trained on base {world.base.id}"
        in err.details()
    )
    assert world.other_base.id in err.details()
    err = _start_error(world, adapter_id=world.base.id, output_name="x")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not an adapter" in err.details()


def test_shape_mismatch_fails_precondition_at_start(world):
    # an adapter claiming the other base passes the lineage check; its tensors
    # don't fit that base
    unlinked = world.registry.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(
            kind=ADAPTER,
            name="unlinked-lora",
            source_path=str(world.data_dir / "incoming" / "adapter"),
            metadata=struct(
                {
                    "base_model_id": world.other_base.id,
                    "base_model_digest": world.other_base.digest,
                }
            ),
        )
    ).artifact
    err = _start_error(
        world,
        adapter_id=unlinked.id,
        base_model_id=world.other_base.id,
        output_name="x",
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "model.layers.0" in err.details()
