"""RegisterArtifact, GetArtifact and ListArtifacts against a real server and DB."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import grpc
import pytest
import torch
from google.protobuf import struct_pb2

from lorafleet.v1 import common_pb2, registry_pb2

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
DATASET = common_pb2.ARTIFACT_KIND_DATASET
ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER


def _rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def test_register_directory_records_every_file_and_digest(register, sources, digest_of):
    src = sources.model()
    meta = struct_pb2.Struct()
    meta.update({"license": "apache-2.0"})
    resp = register(
        BASE_MODEL,
        "smol",
        src,
        metadata=meta,
        metrics={"params_m": 135.0},
        tags={"team": "nlp"},
    )
    a = resp.artifact
    assert not resp.existed
    assert (a.name, a.version, a.kind) == ("smol", 1, BASE_MODEL)
    assert a.digest == digest_of(src)
    assert [f.path for f in a.files] == [
        "config.json",
        "model.safetensors",
        "tokenizer/tokenizer.json",
    ]
    assert a.size_bytes == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert dict(a.metrics) == {"params_m": 135.0} and dict(a.tags) == {"team": "nlp"}
    assert a.metadata["license"] == "apache-2.0"
    assert a.metadata["architecture"] == "llama"  # derived from config.json
    assert a.metadata["model_type"] == "llama"
    stored = Path(a.local_path)
    assert stored.is_absolute() and stored.name == a.digest.removeprefix("sha256:")
    assert (stored / "tokenizer" / "tokenizer.json").read_bytes() == (
        src / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    mode = (stored / "model.safetensors").stat().st_mode
    assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_register_single_file_dataset(register, sources, digest_of):
    src = sources.dataset("train.jsonl", rows=5)
    a = register(DATASET, "support-chats", src).artifact
    assert a.digest == digest_of(src)
    assert [(f.path, f.size_bytes) for f in a.files] == [
        ("train.jsonl", src.stat().st_size)
    ]
    assert a.metadata["rows"] == 5
    assert (Path(a.local_path) / "train.jsonl").read_bytes() == src.read_bytes()


def test_reregistering_identical_content_returns_the_same_version(
    register, sources, stub
):
    src = sources.model()
    first = register(BASE_MODEL, "smol", src)
    again = register(BASE_MODEL, "smol", src)
    assert again.existed and again.artifact.id == first.artifact.id
    assert again.artifact.version == 1
    listed = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(name="smol"))
    assert [a.id for a in listed.artifacts] == [first.artifact.id]


def test_new_bytes_become_version_two(register, sources, stub):
    v1 = register(BASE_MODEL, "smol", sources.model(weights=b"one")).artifact
    v2 = register(BASE_MODEL, "smol", sources.model(weights=b"two")).artifact
    assert (v1.version, v2.version) == (1, 2) and v1.digest != v2.digest
    latest = stub.GetArtifact(registry_pb2.GetArtifactRequest(id="smol")).artifact
    first = stub.GetArtifact(registry_pb2.GetArtifactRequest(id="smol:1")).artifact
    assert (latest.id, first.id) == (v2.id, v1.id)
    # Content that matches an older version is that version, not a new one.
    back = register(BASE_MODEL, "smol", sources.model(weights=b"one"))
    assert back.existed and back.artifact.id == v1.id


def test_matching_expected_digest_registers(register, sources, digest_of):
    src = sources.model()
    ok = register(BASE_MODEL, "smol", src, expected_digest=digest_of(src))
    assert ok.artifact.digest == digest_of(src) and ok.artifact.version == 1


def test_expected_digest_mismatch_is_data_loss(register, sources, stub, digest_of):
    src = sources.model()
    wrong = "sha256:" + "0" * 64
    err = _rpc_error(register, BASE_MODEL, "smol", src, expected_digest=wrong)
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert wrong in err.details() and digest_of(src) in err.details()
    missing = _rpc_error(stub.GetArtifact, registry_pb2.GetArtifactRequest(id="smol"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "kind,pickle", [(BASE_MODEL, "pytorch_model.bin"), (ADAPTER, "optimizer.pt")]
)
def test_pickle_files_are_refused(register, sources, kind, pickle):
    src = sources.model() if kind == BASE_MODEL else sources.adapter()
    (src / pickle).write_bytes(b"\x80\x04pickle")
    err = _rpc_error(register, kind, "unsafe", src)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pickle in err.details() and "safetensors" in err.details()


@pytest.mark.parametrize(
    "kind,remove,named",
    [
        (BASE_MODEL, "config.json", "config.json"),
        (BASE_MODEL, "model.safetensors", "safetensors"),
        (ADAPTER, "adapter_config.json", "adapter_config.json"),
        (ADAPTER, "adapter_model.safetensors", "adapter_model.safetensors"),
    ],
)
def test_kind_content_rules_name_the_missing_file(
    register, sources, kind, remove, named
):
    src = sources.model() if kind == BASE_MODEL else sources.adapter()
    (src / remove).unlink()
    err = _rpc_error(register, kind, "incomplete", src)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in err.details()


def test_dataset_must_be_jsonl(register, data_dir):
    src = data_dir / "incoming" / "rows.csv"
    src.parent.mkdir(parents=True)
    src.write_text("a,b\n1,2\n")
    err = _rpc_error(register, DATASET, "rows", src)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "rows.csv" in err.details()


@pytest.mark.parametrize(
    "kind,name,path,field",
    [
        (common_pb2.ARTIFACT_KIND_UNSPECIFIED, "smol", "model", "kind"),
        (BASE_MODEL, "", "model", "name"),
        (BASE_MODEL, "bad name!", "model", "name"),
        (BASE_MODEL, "smol", "", "source_path"),
    ],
)
def test_missing_or_malformed_fields(register, sources, kind, name, path, field):
    src = str(sources.model()) if path else ""
    err = _rpc_error(register, kind, name, src)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.details()


def test_paths_outside_the_roots_are_refused(register, sources, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "train.jsonl").write_text('{"text": "secret"}\n')
    err = _rpc_error(register, DATASET, "leak", outside / "train.jsonl")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "outside the allowed roots" in err.details()
    # A symlink inside the root that points outside is refused as well.
    src = sources.model()
    os.symlink(outside / "train.jsonl", src / "smuggled.json")
    err = _rpc_error(register, BASE_MODEL, "leak", src)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "smuggled.json" in err.details()


def test_missing_source_is_not_found(register, data_dir):
    err = _rpc_error(register, DATASET, "ghost", data_dir / "nope.jsonl")
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "ref,code",
    [
        ("0" * 32, grpc.StatusCode.NOT_FOUND),
        ("smol:9", grpc.StatusCode.NOT_FOUND),
        ("smol@prod", grpc.StatusCode.NOT_FOUND),
        ("nobody", grpc.StatusCode.NOT_FOUND),
        ("smol:latest", grpc.StatusCode.INVALID_ARGUMENT),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_unknown_references(register, sources, stub, ref, code):
    register(BASE_MODEL, "smol", sources.model())
    err = _rpc_error(stub.GetArtifact, registry_pb2.GetArtifactRequest(id=ref))
    assert err.code() == code
    if code == grpc.StatusCode.NOT_FOUND:
        assert ref in err.details()


def test_unknown_parent_is_not_found(register, sources):
    ghost = "f" * 32
    err = _rpc_error(
        register,
        ADAPTER,
        "lora",
        sources.adapter(),
        parents=[common_pb2.ParentRef(artifact_id=ghost)],
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND and ghost in err.details()


def test_get_by_version_alias_and_bare_name(register, sources, stub):
    v1 = register(BASE_MODEL, "smol", sources.model(weights=b"1")).artifact
    v2 = register(BASE_MODEL, "smol", sources.model(weights=b"2")).artifact
    stub.SetAlias(registry_pb2.SetAliasRequest(artifact_id=v1.id, alias="prod"))

    def get(ref: str) -> common_pb2.Artifact:
        return stub.GetArtifact(registry_pb2.GetArtifactRequest(id=ref)).artifact

    assert get("smol:1").id == v1.id and get("smol:2").id == v2.id
    assert get("smol@prod").id == v1.id
    assert get("smol").id == v2.id
    assert list(get(v1.id).aliases) == ["prod"] and list(get(v2.id).aliases) == []


def test_list_filters_and_pages(register, sources, stub):
    register(BASE_MODEL, "smol", sources.model(weights=b"1"), tags={"stage": "a"})
    register(BASE_MODEL, "smol", sources.model(weights=b"2"), tags={"stage": "b"})
    register(DATASET, "chats", sources.dataset())
    ids = []
    token = ""
    while True:
        page = stub.ListArtifacts(
            registry_pb2.ListArtifactsRequest(page_size=2, page_token=token)
        )
        assert len(page.artifacts) <= 2
        ids += [(a.name, a.version) for a in page.artifacts]
        token = page.next_page_token
        if not token:
            break
    assert ids == [("chats", 1), ("smol", 2), ("smol", 1)]  # newest first

    def names(**kw) -> list[tuple[str, int]]:
        resp = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(**kw))
        return [(a.name, a.version) for a in resp.artifacts]

    assert names(kind=DATASET) == [("chats", 1)]
    assert names(name="smol") == [("smol", 2), ("smol", 1)]
    assert names(tags={"stage": "a"}) == [("smol", 1)]
    assert names(tags={"stage": "zzz"}) == []
    err = _rpc_error(
        stub.ListArtifacts, registry_pb2.ListArtifactsRequest(page_token="garbage!")
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_verify_detects_a_corrupted_blob(register, sources, stub, data_dir):
    a = register(BASE_MODEL, "smol", sources.model(weights=b"A" * 4096)).artifact
    weights = next(f for f in a.files if f.path == "model.safetensors")
    ok = stub.GetArtifact(registry_pb2.GetArtifactRequest(id=a.id, verify=True))
    assert ok.artifact.digest == a.digest
    objects = data_dir / "store" / "objects" / "sha256"
    blob = objects / weights.sha256[:2] / weights.sha256
    blob.chmod(0o644)
    with open(blob, "r+b") as fh:  # in place: the version directory shares the inode
        fh.write(b"B")
    err = _rpc_error(
        stub.GetArtifact, registry_pb2.GetArtifactRequest(id=a.id, verify=True)
    )
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert "model.safetensors" in err.details() and weights.sha256 in err.details()
    unverified = stub.GetArtifact(registry_pb2.GetArtifactRequest(id=a.id))
    assert unverified.artifact.id == a.id


def test_a_name_keeps_one_kind(register, sources):
    register(DATASET, "thing", sources.dataset())
    err = _rpc_error(register, BASE_MODEL, "thing", sources.model())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "DATASET" in err.details()


def test_non_finite_metrics_and_metadata_are_refused(register, sources):
    src = sources.model()
    err = _rpc_error(register, BASE_MODEL, "smol", src, metrics={"loss": float("nan")})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "loss" in err.details()
    meta = struct_pb2.Struct()
    meta.update({"ppl": float("inf")})
    err = _rpc_error(register, BASE_MODEL, "smol", src, metadata=meta)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "metadata" in err.details()


def test_parent_relation_must_be_an_identifier(register, sources):
    base = register(BASE_MODEL, "base", sources.model()).artifact
    err = _rpc_error(
        register,
        ADAPTER,
        "lora",
        sources.adapter(),
        parents=[common_pb2.ParentRef(artifact_id=base.id, relation="Base Model!")],
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Base Model!" in err.details()


def _layered_model(root, name: str, layers: int, config_layers: int):
    """A model folder whose weights hold `layers` layers and whose config.json
    says `config_layers`."""
    import json as _json

    from safetensors.torch import save_file

    path = root / "incoming" / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        _json.dumps({"model_type": "llama", "num_hidden_layers": config_layers})
    )
    tensors = {"model.embed_tokens.weight": torch.zeros(8, 4)}
    for i in range(layers):
        tensors[f"model.layers.{i}.mlp.up_proj.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(path / "model.safetensors"))
    return path


def test_a_model_records_its_depth_and_size_from_its_files(register, data_dir):
    a = register(BASE_MODEL, "deep", _layered_model(data_dir, "deep", 3, 3)).artifact
    assert a.metadata["num_hidden_layers"] == 3
    assert a.metadata["num_parameters"] == 8 * 4 + 3 * 16


def test_a_config_whose_layer_count_disagrees_with_the_weights_is_refused(
    register, stub, data_dir
):
    """A layer stack that kept its inputs' num_hidden_layers would load with
    layers silently dropped: the registry refuses it, naming the fix."""
    with pytest.raises(grpc.RpcError) as err:
        register(BASE_MODEL, "stacked", _layered_model(data_dir, "stacked", 3, 2))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "num_hidden_layers = 2 but the weights hold 3 layers" in err.value.details()
    listed = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(name="stacked"))
    assert not listed.artifacts
