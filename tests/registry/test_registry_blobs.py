"""Chunked, resumable, verified blob upload and download; registering from blobs."""

from __future__ import annotations

import hashlib
import json
import os

import grpc
import pytest

from lorafleet.v1 import common_pb2, registry_pb2
from tests.registry.files import safetensors_bytes

ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER
CHUNK = 64 * 1024


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _messages(data: bytes, sha: str, offset: int = 0, total: int | None = None):
    total = len(data) if total is None else total
    first = True
    for start in range(offset, len(data), CHUNK) if data[offset:] else [offset]:
        chunk = data[start : start + CHUNK]
        if first:
            yield registry_pb2.UploadBlobRequest(
                sha256=sha, size_bytes=total, offset=offset, data=chunk
            )
            first = False
        else:
            yield registry_pb2.UploadBlobRequest(data=chunk)


def upload(stub, data: bytes, sha: str | None = None, **kw):
    sha = sha or _sha(data)
    return stub.UploadBlob(_messages(data, sha, **kw))


def download(stub, sha: str, offset: int = 0) -> bytes:
    return b"".join(
        m.data
        for m in stub.DownloadBlob(
            registry_pb2.DownloadBlobRequest(sha256=sha, offset=offset)
        )
    )


def test_upload_in_chunks_then_download_round_trips(stub):
    data = os.urandom(5 * CHUNK + 123)
    sha = _sha(data)
    response = upload(stub, data)
    assert response.sha256 == sha and response.size_bytes == len(data)
    assert not response.existed
    assert upload(stub, data).existed  # content-addressed: nothing rewritten
    status = stub.GetUploadStatus(registry_pb2.GetUploadStatusRequest(sha256=sha))
    assert status.complete and status.committed_offset == len(data)
    assert download(stub, sha) == data
    assert download(stub, sha, offset=CHUNK + 7) == data[CHUNK + 7 :]


def test_upload_resumes_from_the_committed_offset(stub, data_dir):
    data = os.urandom(4 * CHUNK)
    sha = _sha(data)
    # A client that stops halfway (half-close) is told where to resume.
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(_messages(data[: 2 * CHUNK], sha, total=len(data)))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"offset {2 * CHUNK}" in err.value.details()
    status = stub.GetUploadStatus(registry_pb2.GetUploadStatusRequest(sha256=sha))
    assert (status.committed_offset, status.complete) == (2 * CHUNK, False)
    # Nothing is visible in the store while the upload is incomplete.
    with pytest.raises(grpc.RpcError) as err:
        download(stub, sha)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not list((data_dir / "store" / "objects").rglob(sha))
    # Resuming past the committed offset is refused; at it, it completes.
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, data, offset=3 * CHUNK)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert not upload(stub, data, offset=status.committed_offset).existed
    assert download(stub, sha) == data


def test_digest_mismatch_is_data_loss_naming_both_digests(stub):
    data = b"the real bytes" * 1000
    claimed = _sha(b"something else")
    with pytest.raises(grpc.RpcError) as err:
        upload(stub, data, sha=claimed)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert claimed in err.value.details() and _sha(data) in err.value.details()
    status = stub.GetUploadStatus(registry_pb2.GetUploadStatusRequest(sha256=claimed))
    assert (status.committed_offset, status.complete) == (0, False)


@pytest.mark.parametrize(
    "first, code",
    [
        (dict(sha256="abc", size_bytes=1), grpc.StatusCode.INVALID_ARGUMENT),
        (
            dict(sha256="0" * 64, size_bytes=1, offset=2),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (dict(sha256="0" * 64, size_bytes=-1), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_malformed_upload_headers_are_invalid_argument(stub, first, code):
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(iter([registry_pb2.UploadBlobRequest(**first)]))
    assert err.value.code() == code


def test_oversized_upload_is_refused(stub):
    data = b"x" * 100
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadBlob(_messages(data, _sha(data), total=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_corrupted_blob_is_data_loss_and_never_served(stub, data_dir):
    data = os.urandom(3 * CHUNK)
    sha = _sha(data)
    upload(stub, data)
    blob = next((data_dir / "store" / "objects").rglob(sha))
    blob.chmod(0o644)
    with open(blob, "r+b") as fh:
        fh.seek(CHUNK)
        fh.write(b"\0" * 16)
    with pytest.raises(grpc.RpcError) as err:
        received = []
        for message in stub.DownloadBlob(registry_pb2.DownloadBlobRequest(sha256=sha)):
            received.append(message)
    assert err.value.code() == grpc.StatusCode.DATA_LOSS
    assert received == []  # verified before the first byte goes out


def test_unknown_and_malformed_blobs(stub):
    with pytest.raises(grpc.RpcError) as err:
        download(stub, "a" * 64)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        stub.GetUploadStatus(registry_pb2.GetUploadStatusRequest(sha256="nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _adapter_blobs(
    stub, weights: bytes = b"lora-weights"
) -> list[common_pb2.FileEntry]:
    files = {
        "adapter_config.json": json.dumps({"r": 4, "lora_alpha": 8}).encode(),
        "adapter_model.safetensors": safetensors_bytes(weights),
    }
    entries = []
    for path, data in files.items():
        upload(stub, data)
        entries.append(
            common_pb2.FileEntry(path=path, sha256=_sha(data), size_bytes=len(data))
        )
    return entries


def test_register_from_uploaded_blobs(stub, digest_of, tmp_path):
    files = _adapter_blobs(stub)
    response = stub.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(kind=ADAPTER, name="remote", files=files)
    )
    artifact = response.artifact
    assert not response.existed and artifact.version == 1
    assert artifact.metadata["rank"] == 4  # inspected from the uploaded config
    # Same digest as registering the same files from a directory.
    local = tmp_path / "same"
    local.mkdir()
    (local / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}))
    (local / "adapter_model.safetensors").write_bytes(
        safetensors_bytes(b"lora-weights")
    )
    assert artifact.digest == digest_of(local)
    again = stub.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(kind=ADAPTER, name="remote", files=files)
    )
    assert again.existed and again.artifact.id == artifact.id
    for f in artifact.files:
        assert _sha(download(stub, f.sha256)) == f.sha256


def test_register_from_missing_or_bad_blobs_is_refused(stub):
    files = _adapter_blobs(stub)
    missing = common_pb2.FileEntry(path="extra.json", sha256="b" * 64, size_bytes=3)
    cases = [
        ([*files, missing], grpc.StatusCode.FAILED_PRECONDITION, "b" * 64),
        (
            [common_pb2.FileEntry(path="../x", sha256=files[0].sha256, size_bytes=1)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "../x",
        ),
        (
            [
                files[0],
                common_pb2.FileEntry(
                    path="adapter_model.safetensors",
                    sha256=files[1].sha256,
                    size_bytes=files[1].size_bytes + 1,
                ),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "size_bytes",
        ),
    ]
    for entries, code, text in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.RegisterArtifact(
                registry_pb2.RegisterArtifactRequest(
                    kind=ADAPTER, name="remote", files=entries
                )
            )
        assert err.value.code() == code, err.value.details()
        assert text in err.value.details()
