"""Hostile StartMergeJob input over real gRPC: bad parameters, corrupt weights.

Each case is INVALID_ARGUMENT at Start, naming what is wrong, and creates no job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
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
from services.common.convert import struct as to_struct
from services.common.errors import InvalidArgument
from services.merger.safetensors_io import TensorReader, read_layout
from tests.merger.helpers import make_adapter
from tests.merger.test_model_merge import perturbed


@dataclasses.dataclass
class World:
    registry: registry_pb2_grpc.RegistryServiceStub
    merger: merger_pb2_grpc.MergerServiceStub
    base: common_pb2.Artifact
    finetunes: list[common_pb2.Artifact]
    incoming: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    from services.merger.server import create as create_merger
    from services.registry.server import create as create_registry

    data_dir = tmp_path_factory.mktemp("merge-hostile") / "data"
    config = load_config(env={}, auth_mode="disabled", data_dir=data_dir, port=0)
    registry_server = create_registry(config, port=0)
    config = dataclasses.replace(config, registry_address=registry_server.address)
    merger_server = create_merger(config, port=0)
    channels = [
        grpc.insecure_channel(s.address) for s in (registry_server, merger_server)
    ]
    registry = registry_pb2_grpc.RegistryServiceStub(channels[0])
    incoming = data_dir / "incoming"
    shutil.copytree(tiny_model_dir, incoming / "llama")

    def register(kind, name, src):
        return registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=kind, name=name, source_path=str(src)
            ),
            timeout=60,
        ).artifact

    base = register(common_pb2.ARTIFACT_KIND_BASE_MODEL, "base", incoming / "llama")
    finetunes = [
        register(
            common_pb2.ARTIFACT_KIND_MERGED_MODEL,
            f"ft-{i}",
            perturbed(tiny_model_dir, incoming / f"ft{i}", seed=i),
        )
        for i in (1, 2)
    ]
    yield World(
        registry,
        merger_pb2_grpc.MergerServiceStub(channels[1]),
        base,
        finetunes,
        incoming,
    )
    for channel in channels:
        channel.close()
    merger_server.stop(0)
    registry_server.stop(0)


def _job_count(world: World) -> int:
    return len(
        world.merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest(), timeout=10).jobs
    )


def _refused(world: World, request: merger_pb2.StartMergeJobRequest) -> str:
    """Starts the merge, expects INVALID_ARGUMENT and no new job; the message."""
    before = _job_count(world)
    with pytest.raises(grpc.RpcError) as err:
        world.merger.StartMergeJob(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert _job_count(world) == before
    return err.value.details()


@pytest.mark.parametrize(
    "method, params, words",
    [
        (
            "ties",
            {"density": "abc"},
            ["parameter density must be a finite number", "(0, 1]", '"abc"'],
        ),
        ("ties", {"density": 0.5, "scale": "x"}, ["parameter scale", '"x"']),
        ("linear", {"normalize": "yes"}, ["normalize must be true or false"]),
        ("linear", {"weights": "1,2"}, ["weights must be a list with one setting"]),
        ("linear", {"weights": [0, 0]}, ["[0.0, 0.0] are all 0", "all-zero model"]),
        ("linear", {"weights": [1, -1]}, ["sum to 0", "normalize"]),
        ("slerp", {"t": 0.5, "t_by_layer": [0.1, "x"]}, ["t_by_layer[1]", '"x"']),
    ],
)
def test_wrong_parameter_types_and_degenerate_weights(world, method, params, words):
    message = _refused(
        world,
        merger_pb2.StartMergeJobRequest(
            method=method,
            input_model_ids=[m.id for m in world.finetunes],
            base_model_id=world.base.id if method == "ties" else "",
            output_name="hostile",
            params=to_struct(params),
        ),
    )
    for word in words:
        assert word in message, message


def test_nan_weights_are_invalid_at_start(world):
    message = _refused(
        world,
        merger_pb2.StartMergeJobRequest(
            method="linear",
            input_model_ids=[m.id for m in world.finetunes],
            output_name="hostile",
            params=to_struct({"weights": [float("nan"), 1.0]}),
        ),
    )
    assert "weights[0]" in message and "NaN" in message


def test_an_adapter_whose_stored_weights_were_truncated(world):
    src = world.incoming / "adapter"
    make_adapter(Path(world.base.local_path), src, seed=3)
    adapter = world.registry.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(
            kind=common_pb2.ARTIFACT_KIND_ADAPTER,
            name="truncated-later",
            source_path=str(src),
            metadata=to_struct(
                {"base_model_id": world.base.id, "base_model_digest": world.base.digest}
            ),
        ),
        timeout=60,
    ).artifact
    stored = Path(adapter.local_path) / "adapter_model.safetensors"
    stored.chmod(0o644)  # the store keeps files read-only; damage it on purpose
    os.truncate(stored, stored.stat().st_size - 10)
    message = _refused(
        world,
        merger_pb2.StartMergeJobRequest(adapter_id=adapter.id, output_name="merged"),
    )
    assert str(stored) in message and "not a valid safetensors file" in message


def _safetensors(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_reading_code_names_the_file_it_cannot_parse(tmp_path):
    """The header-reading paths a merge uses map safetensors errors the same way."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    shard = model / "model.safetensors"
    header = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    shard.write_bytes(_safetensors(header, b"\0" * 12))  # 4 bytes short
    with pytest.raises(InvalidArgument, match="model.safetensors is not a valid"):
        read_layout(model)
    shard.write_bytes(b"\x80\x04\x95" + b"\0" * 40)  # a pickle under that name
    with pytest.raises(InvalidArgument) as err:
        TensorReader(shard)
    assert str(shard) in err.value.message and "pickle" in err.value.message
