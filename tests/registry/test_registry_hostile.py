"""Hostile registry input over real gRPC: a precise status, and nothing recorded.

Non-finite metadata in files, malformed safetensors, out-of-range filters, huge
echoed values, rollbacks that would bend the alias rules, blobs damaged on disk.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import struct
import zipfile
from pathlib import Path

import grpc
import pytest

from lorafleet.v1 import common_pb2, registry_pb2
from tests.registry.files import safetensors_bytes

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER
HUGE = "x" * 10_000


def _error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value


def _listed(stub, filter: str = "") -> list[str]:
    reply = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(filter=filter))
    return [a.id for a in reply.artifacts]


def _stored_blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "store" / "objects").rglob("*") if p.is_file()]


# -- 3. NaN / Infinity in metadata read from files -----------------------------


@pytest.mark.parametrize(
    "kind, config_name, config_text, key, shown",
    [
        (
            ADAPTER,
            "adapter_config.json",
            '{"r": 8, "lora_alpha": NaN}',
            "lora_alpha",
            "NaN",
        ),
        (ADAPTER, "adapter_config.json", '{"r": Infinity}', "r", "Infinity"),
        (
            BASE_MODEL,
            "config.json",
            '{"model_type": "llama", "architectures": ["A", -Infinity]}',
            "architectures[1]",
            "-Infinity",
        ),
    ],
)
def test_non_finite_numbers_in_config_files_are_refused(
    stub, sources, data_dir, kind, config_name, config_text, key, shown
):
    src = sources.adapter("nan") if kind == ADAPTER else sources.model("nan")
    (src / config_name).write_text(config_text)
    err = _error(
        stub.RegisterArtifact,
        registry_pb2.RegisterArtifactRequest(
            kind=kind, name="nan", source_path=str(src)
        ),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith(f"{config_name}: {key} is {shown}")
    assert "not a finite number" in err.details()
    assert _listed(stub) == [] and _stored_blobs(data_dir) == []
    # Nothing half-recorded poisons the JSON filters either.
    assert _listed(stub, "metadata.alpha > 1") == []


# -- 4. safetensors files that do not hold what their header says -------------


def _truncated() -> bytes:
    return safetensors_bytes(b"w" * 64)[:-5]


def _one_terabyte_claim() -> bytes:
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [250_000_000_000], "data_offsets": [0, 10**12]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 16


def _pickle() -> bytes:
    return pickle.dumps({"weight": [0.0] * 8}, protocol=4)


def _torch_zip(tmp_path: Path) -> bytes:
    path = tmp_path / "ckpt.zip"
    with zipfile.ZipFile(path, "w") as zf:  # torch.save's container format
        zf.writestr("archive/data.pkl", _pickle())
    return path.read_bytes()


def _gap() -> bytes:
    header = json.dumps(
        {
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 12


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp: _truncated(), ["the file has", "it is truncated"]),
        (lambda tmp: _one_terabyte_claim(), ["describes 1000000000", "truncated"]),
        (lambda tmp: _pickle(), ["a Python pickle", "not safetensors"]),
        (_torch_zip, ["a zip archive", "not safetensors"]),
        (lambda tmp: _gap(), ["tensor 'b' starts at data offset 8", "a gap"]),
    ],
    ids=["truncated", "1tb-claim", "pickle", "torch-zip", "gap"],
)
def test_malformed_safetensors_are_refused_at_registration(
    stub, sources, data_dir, tmp_path, make, words
):
    src = sources.model("bad-weights")
    (src / "model.safetensors").write_bytes(make(tmp_path))
    err = _error(
        stub.RegisterArtifact,
        registry_pb2.RegisterArtifactRequest(
            kind=BASE_MODEL, name="bad", source_path=str(src)
        ),
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert err.details().startswith(
        "model.safetensors is not a valid safetensors file: "
    )
    for word in words:
        assert word in err.details(), err.details()
    assert _listed(stub) == [] and _stored_blobs(data_dir) == []


# -- 6. numbers beyond the version column, and values too long to echo ------

MAX_VERSION = 2**31 - 1  # artifacts.version is a 32-bit INTEGER on PostgreSQL


@pytest.mark.parametrize(
    "filter, words",
    [
        (
            "version > 99999999999999999999",
            ["'99999999999999999999'", f"between {-MAX_VERSION - 1} and {MAX_VERSION}"],
        ),
        ("version >= 2147483648", ["'2147483648'", str(MAX_VERSION)]),
        ("version = 1e999", ["'1e999'", "an integer"]),
        ("version < 1.5", ["'1.5'", "an integer"]),
        ("metrics.loss < nan", ["'nan'", "finite number"]),
    ],
)
def test_numbers_out_of_range_in_filters_are_invalid(
    stub, register, sources, filter, words
):
    register(BASE_MODEL, "smol", sources.model())
    err = _error(stub.ListArtifacts, registry_pb2.ListArtifactsRequest(filter=filter))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    for word in words:
        assert word in err.details(), err.details()
    # The largest version binds fine on both databases and matches nothing.
    assert _listed(stub, f"version >= {MAX_VERSION}") == []
    assert _listed(stub, "base_model = smol:99999999999") == []


def test_versions_beyond_the_column_are_refused_not_crashed(stub, register, sources):
    err = _error(register, BASE_MODEL, "smol", sources.model(), version=2**40)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert f"between 1 and {MAX_VERSION}" in err.details()
    err = _error(
        stub.GetArtifact, registry_pb2.GetArtifactRequest(id="smol:" + "9" * 5000)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert f"from 1 to {MAX_VERSION}" in err.details()
    assert _listed(stub) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.ListArtifacts(registry_pb2.ListArtifactsRequest(page_token=HUGE)),
        lambda s: s.ListArtifacts(registry_pb2.ListArtifactsRequest(filter=HUGE)),
        lambda s: s.ListArtifacts(
            registry_pb2.ListArtifactsRequest(filter=f"version > {'9' * 10_000}")
        ),
        lambda s: s.GetArtifact(registry_pb2.GetArtifactRequest(id=HUGE)),
        lambda s: s.ResolveAlias(
            registry_pb2.ResolveAliasRequest(name="smol", alias=HUGE)
        ),
        lambda s: s.SetAlias(
            registry_pb2.SetAliasRequest(artifact_id=HUGE, alias="prod")
        ),
        lambda s: s.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=BASE_MODEL, name=HUGE, source_path="/x"
            )
        ),
        lambda s: s.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=BASE_MODEL, name="smol", source_path="/" + HUGE
            )
        ),
        lambda s: s.GetUploadStatus(registry_pb2.GetUploadStatusRequest(sha256=HUGE)),
        lambda s: s.GetDeployment(registry_pb2.GetDeploymentRequest(name=HUGE)),
    ],
    ids=[
        "page_token",
        "filter",
        "filter-number",
        "id",
        "alias",
        "artifact_id",
        "name",
        "source_path",
        "sha256",
        "deployment",
    ],
)
def test_long_request_values_are_shortened_in_messages(stub, call):
    err = _error(call, stub)
    assert err.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
    ), err.details()
    assert "…" in err.details() and "x" * 100 not in err.details()
    assert "9" * 100 not in err.details()
    assert len(err.details()) < 600, len(err.details())


# -- 7. rollback moves an existing alias, never onto an archived version ------


def _two_versions_with_alias(register, sources, stub):
    v1 = register(BASE_MODEL, "smol", sources.model("a", b"1")).artifact
    v2 = register(BASE_MODEL, "smol", sources.model("b", b"2")).artifact
    for v in (v1, v2):
        stub.SetAlias(registry_pb2.SetAliasRequest(artifact_id=v.id, alias="prod"))
    return v1, v2


def _history(stub, alias: str = "prod") -> list[tuple[str, str]]:
    events = stub.ListAliasHistory(
        registry_pb2.ListAliasHistoryRequest(name="smol", alias=alias)
    ).events
    return [(e.from_artifact_id, e.to_artifact_id) for e in events]


def test_rollback_to_an_archived_version_is_a_failed_precondition(
    register, sources, stub
):
    v1, v2 = _two_versions_with_alias(register, sources, stub)
    stub.ArchiveArtifact(registry_pb2.ArchiveArtifactRequest(id=v1.id, archived=True))
    before = _history(stub)
    err = _error(
        stub.RollbackAlias,
        registry_pb2.RollbackAliasRequest(
            name="smol", alias="prod", to_artifact_id=v1.id
        ),
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    assert "smol:1 is archived" in err.details()
    assert "allow_archived" in err.details() and "ArchiveArtifact" in err.details()
    resolved = stub.ResolveAlias(
        registry_pb2.ResolveAliasRequest(name="smol", alias="prod")
    ).artifact
    assert resolved.id == v2.id and _history(stub) == before
    # Undoing the latest move restores an earlier state, archived or not.
    back = stub.RollbackAlias(
        registry_pb2.RollbackAliasRequest(name="smol", alias="prod")
    )
    assert back.artifact.id == v1.id and back.previous_artifact_id == v2.id


def test_rollback_never_creates_an_alias(register, sources, stub):
    v1 = register(BASE_MODEL, "smol", sources.model()).artifact
    err = _error(
        stub.RollbackAlias,
        registry_pb2.RollbackAliasRequest(
            name="smol", alias="prod", to_artifact_id=v1.id
        ),
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
    assert "'smol' has no alias 'prod'" in err.details()
    assert "SetAlias" in err.details()
    missing = _error(
        stub.ResolveAlias, registry_pb2.ResolveAliasRequest(name="smol", alias="prod")
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert _history(stub) == []
    assert (
        stub.GetArtifact(registry_pb2.GetArtifactRequest(id=v1.id)).artifact.aliases
        == []
    )


# -- 8. a stored blob damaged on disk is missing, not complete ----------------


def _upload(stub, data: bytes) -> registry_pb2.UploadBlobResponse:
    sha = hashlib.sha256(data).hexdigest()
    return stub.UploadBlob(
        iter(
            [
                registry_pb2.UploadBlobRequest(
                    sha256=sha, size_bytes=len(data), data=data
                )
            ]
        )
    )


def _status(stub, sha: str) -> tuple[int, bool]:
    reply = stub.GetUploadStatus(registry_pb2.GetUploadStatusRequest(sha256=sha))
    return reply.committed_offset, reply.complete


def _damage(data_dir: Path, sha: str, how: str) -> None:
    blob = data_dir / "store" / "objects" / "sha256" / sha[:2] / sha
    blob.chmod(0o644)  # published blobs are read-only
    with open(blob, "r+b") as fh:
        if how == "truncate":
            fh.truncate(blob.stat().st_size // 2)
        else:  # the same size, one byte changed
            fh.write(b"\xff")


@pytest.mark.parametrize("how", ["truncate", "alter"])
def test_a_damaged_blob_is_incomplete_and_can_be_uploaded_again(stub, data_dir, how):
    data = bytes(range(256)) * 64
    sha = hashlib.sha256(data).hexdigest()
    assert not _upload(stub, data).existed
    _damage(data_dir, sha, how)
    assert _status(stub, sha) == (0, False)
    quarantined = list((data_dir / "store" / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith(sha)
    again = _upload(stub, data)
    assert not again.existed and _status(stub, sha) == (len(data), True)
    download = stub.DownloadBlob(registry_pb2.DownloadBlobRequest(sha256=sha))
    assert b"".join(m.data for m in download) == data


def test_upload_without_a_status_check_replaces_a_damaged_blob(stub, data_dir):
    data = b"lora weights " * 500
    sha = hashlib.sha256(data).hexdigest()
    _upload(stub, data)
    _damage(data_dir, sha, "alter")
    assert not _upload(stub, data).existed  # not "existed": the copy was bad
    assert _status(stub, sha) == (len(data), True)


def test_registering_from_a_truncated_blob_asks_for_the_upload(stub, data_dir):
    config = b'{"r": 4, "lora_alpha": 8}'
    weights = safetensors_bytes(b"w" * 256)
    for blob in (config, weights):
        _upload(stub, blob)
    sha = hashlib.sha256(weights).hexdigest()
    _damage(data_dir, sha, "truncate")
    err = _error(
        stub.RegisterArtifact,
        registry_pb2.RegisterArtifactRequest(
            kind=ADAPTER,
            name="remote",
            files=[
                common_pb2.FileEntry(
                    path="adapter_config.json",
                    sha256=hashlib.sha256(config).hexdigest(),
                    size_bytes=len(config),
                ),
                common_pb2.FileEntry(
                    path="adapter_model.safetensors",
                    sha256=sha,
                    size_bytes=len(weights),
                ),
            ],
        ),
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
    assert f"adapter_model.safetensors ({sha})" in err.details()
    assert "UploadBlob" in err.details()
    assert _listed(stub) == []
