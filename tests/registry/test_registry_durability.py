"""Races on aliases and versions, and a registry killed with SIGKILL mid-upload."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from lorafleet.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.registry import repository
from tests.registry.files import safetensors_bytes

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
REPO = Path(__file__).resolve().parents[2]
CLIENTS = 32


def test_32_clients_moving_production_leave_one_coherent_history(
    register, sources, server
):
    versions = [
        register(BASE_MODEL, "smol", sources.model(f"m{i}", f"w{i}".encode())).artifact
        for i in range(CLIENTS)
    ]
    conflicts = []

    def client(i: int) -> str:
        """Read-modify-write with compare-and-set, retrying on ABORTED."""
        with grpc.insecure_channel(server.address) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            while True:
                try:
                    current = stub.ResolveAlias(
                        registry_pb2.ResolveAliasRequest(
                            name="smol", alias="production"
                        )
                    ).artifact.id
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND
                    current = ""
                try:
                    return stub.SetAlias(
                        registry_pb2.SetAliasRequest(
                            artifact_id=versions[i].id,
                            alias="production",
                            expected_artifact_id=current,
                            reason=f"client {i}",
                        ),
                        metadata=(("lorafleet-actor", f"client-{i}"),),
                    ).previous_artifact_id
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.ABORTED, exc.details()
                    conflicts.append(i)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        previous = list(pool.map(client, range(CLIENTS)))

    with grpc.insecure_channel(server.address) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        events = []
        token = ""
        while True:
            page = stub.ListAliasHistory(
                registry_pb2.ListAliasHistoryRequest(
                    name="smol", alias="production", page_size=10, page_token=token
                )
            )
            events += page.events
            token = page.next_page_token
            if not token:
                break
        final = stub.ResolveAlias(
            registry_pb2.ResolveAliasRequest(name="smol", alias="production")
        ).artifact
        holders = stub.ListArtifacts(
            registry_pb2.ListArtifactsRequest(name="smol", page_size=100)
        ).artifacts
    chain = list(reversed(events))  # oldest first
    assert len(chain) == CLIENTS  # every move recorded exactly once
    assert chain[0].from_artifact_id == ""
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.from_artifact_id == before.to_artifact_id
    assert chain[-1].to_artifact_id == final.id
    assert {e.to_artifact_id for e in chain} == {v.id for v in versions}
    # Each client asserted a name in `lorafleet-actor`; none is believed (auth
    # is off here: every caller is anonymous; tests/test_auth.py checks that
    # authenticated callers are named).
    assert {e.actor for e in chain} == {"anonymous"}
    assert sorted(previous, key=str) == sorted(
        [e.from_artifact_id for e in chain], key=str
    )
    assert [a.id for a in holders if "production" in a.aliases] == [final.id]


@pytest.fixture(params=["locked", "constraints-only"])
def name_lock(request, monkeypatch):
    if request.param == "constraints-only":
        monkeypatch.setattr(repository, "lock_key", lambda *_: None)
    return request.param


def test_concurrent_registration_of_one_version_has_one_winner(
    register, sources, stub, name_lock
):
    paths = [sources.model(f"c{i}", f"content-{i}".encode()) for i in range(8)]

    def attempt(i):
        try:
            return register(BASE_MODEL, "smol", paths[i], version=1)
        except grpc.RpcError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, range(8)))
    winners = [r for r in results if not isinstance(r, grpc.RpcError)]
    losers = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(winners) == 1
    assert {e.code() for e in losers} == {grpc.StatusCode.ALREADY_EXISTS}
    listed = stub.ListArtifacts(registry_pb2.ListArtifactsRequest(name="smol"))
    assert [a.id for a in listed.artifacts] == [winners[0].artifact.id]


# -- a real registry process, killed mid-upload ------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegistryProcess:
    def __init__(self, data_dir: Path, dsn: str) -> None:
        self.data_dir, self.dsn = data_dir, dsn
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None

    def start(self) -> registry_pb2_grpc.RegistryServiceStub:
        port = _free_port()
        env = {
            **os.environ,
            "LORAFLEET_REGISTRY_DSN": self.dsn,
            "LORAFLEET_OTEL_ENABLED": "false",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.registry",
                "--port",
                str(port),
                "--data-dir",
                str(self.data_dir),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=60)
        return registry_pb2_grpc.RegistryServiceStub(self.channel)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        if self.channel:
            self.channel.close()


def test_sigkill_mid_upload_loses_nothing_and_exposes_no_partial_blob(
    registry_dsn, tmp_path
):
    data_dir = tmp_path / "data"
    src = data_dir / "incoming" / "m"
    src.mkdir(parents=True)
    (src / "config.json").write_text('{"model_type": "llama"}')
    (src / "model.safetensors").write_bytes(safetensors_bytes(b"committed weights"))
    payload = os.urandom(6 * (1 << 20))
    sha = hashlib.sha256(payload).hexdigest()
    chunk = 256 * 1024
    half = len(payload) // 2

    registry = RegistryProcess(data_dir, registry_dsn)
    stub = registry.start()
    try:
        committed = stub.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=BASE_MODEL, name="smol", source_path=str(src)
            )
        ).artifact
        stub.SetAlias(
            registry_pb2.SetAliasRequest(artifact_id=committed.id, alias="production")
        )
        hold = threading.Event()

        def messages():
            yield registry_pb2.UploadBlobRequest(
                sha256=sha, size_bytes=len(payload), data=payload[:chunk]
            )
            for start in range(chunk, half, chunk):
                yield registry_pb2.UploadBlobRequest(
                    data=payload[start : start + chunk]
                )
            hold.wait(60)  # the stream stays open, mid-upload

        outcome: list = []
        uploader = threading.Thread(
            target=lambda: outcome.append(_call(stub.UploadBlob, messages()))
        )
        uploader.start()
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            status = stub.GetUploadStatus(
                registry_pb2.GetUploadStatusRequest(sha256=sha)
            )
            if status.committed_offset >= half:
                break
            time.sleep(0.02)
        assert status is not None and status.committed_offset == half
        registry.kill()
        hold.set()
        uploader.join(30)
        assert isinstance(outcome[0], grpc.RpcError)  # the client saw it fail

        store = data_dir / "store"
        assert not list((store / "objects").rglob(sha))  # nothing partial visible

        stub = registry.start()
        again = stub.GetArtifact(
            registry_pb2.GetArtifactRequest(id=committed.id, verify=True)
        )
        assert again.artifact.digest == committed.digest
        resolved = stub.ResolveAlias(
            registry_pb2.ResolveAliasRequest(name="smol", alias="production")
        )
        assert resolved.artifact.id == committed.id
        with pytest.raises(grpc.RpcError) as err:
            list(stub.DownloadBlob(registry_pb2.DownloadBlobRequest(sha256=sha)))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        status = stub.GetUploadStatus(registry_pb2.GetUploadStatusRequest(sha256=sha))
        assert (status.committed_offset, status.complete) == (half, False)

        offset = status.committed_offset

        def rest():
            yield registry_pb2.UploadBlobRequest(
                sha256=sha, size_bytes=len(payload), offset=offset
            )
            for start in range(offset, len(payload), chunk):
                yield registry_pb2.UploadBlobRequest(
                    data=payload[start : start + chunk]
                )

        assert not stub.UploadBlob(rest()).existed
        received = b"".join(
            m.data
            for m in stub.DownloadBlob(registry_pb2.DownloadBlobRequest(sha256=sha))
        )
        assert received == payload
    finally:
        if registry.proc and registry.proc.poll() is None:
            registry.kill()


def _call(fn, arg):
    try:
        return fn(arg)
    except grpc.RpcError as exc:
        return exc
