"""A small Python client over the generated stubs: addresses, deadlines, helpers."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc

from lorafleet.credentials import MetadataInterceptor, credential_metadata
from lorafleet.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    inference_pb2_grpc,
    merger_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2_grpc,
    validator_pb2_grpc,
)

DEFAULT_GATEWAY = "127.0.0.1:50050"
DEFAULT_REGISTRY = "127.0.0.1:50051"
_MAX_MESSAGE = 64 * 1024 * 1024
_CHUNK = 1 << 20


class Client:
    """Talks to a running lorafleet suite.

    ``gateway`` and ``registry`` are the two entry points users need; the other
    services are reachable through ``Client.stub(name, address)`` for operators.
    Unary calls default to a ``timeout_s`` deadline; watches to ``watch_timeout_s``.
    Workflow calls ride out a gateway restart: they are retried (RunWorkflow
    with a request id, so a retry never starts a second workflow) and watches
    resume after the last event seen, for up to ``reconnect_s``.
    Any ``tls_*`` argument switches every channel to TLS: ``tls_ca_file``
    verifies the servers (else the system roots), ``tls_cert_file`` +
    ``tls_key_file`` are the client certificate a server with mTLS requires,
    and ``tls_server_name`` is the host name checked in their certificates
    when the address's host is not in them.
    ``api_key`` (``lfk_...``) or ``token`` (a JWT) authenticates every call,
    and ``project`` names the project calls act in; unset, they come from
    ``LORAFLEET_API_KEY``, ``LORAFLEET_TOKEN`` and ``LORAFLEET_PROJECT``.
    """

    def __init__(
        self,
        gateway: str = DEFAULT_GATEWAY,
        registry: str = DEFAULT_REGISTRY,
        timeout_s: float = 60.0,
        watch_timeout_s: float = 6 * 3600.0,
        reconnect_s: float = 600.0,
        *,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_server_name: str | None = None,
        api_key: str | None = None,
        token: str | None = None,
        project: str | None = None,
    ) -> None:
        self._channels: list[grpc.Channel] = []
        # Checked now: a key and a token together is a mistake to name early.
        self._call_metadata = credential_metadata(api_key, token, project)
        self._credentials: grpc.ChannelCredentials | None = None
        self._tls_server_name = tls_server_name
        if tls_ca_file or tls_cert_file or tls_key_file or tls_server_name:
            if bool(tls_cert_file) != bool(tls_key_file):
                raise ValueError(
                    "tls_cert_file and tls_key_file go together (the client "
                    "certificate and its key): give both or neither"
                )

            def pem(path: str | None) -> bytes | None:
                return Path(path).expanduser().read_bytes() if path else None

            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=pem(tls_ca_file),
                private_key=pem(tls_key_file),
                certificate_chain=pem(tls_cert_file),
            )
        self.timeout_s = timeout_s
        self.watch_timeout_s = watch_timeout_s
        self.reconnect_s = reconnect_s
        self.gateway = gateway_pb2_grpc.GatewayServiceStub(self._channel(gateway))
        self.registry = registry_pb2_grpc.RegistryServiceStub(self._channel(registry))

    def _channel(self, address: str) -> grpc.Channel:
        options: list[tuple[str, Any]] = [
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ]
        if self._credentials is None:
            channel = grpc.insecure_channel(address, options=options)
        else:
            if self._tls_server_name:
                options.append(("grpc.ssl_target_name_override", self._tls_server_name))
            channel = grpc.secure_channel(address, self._credentials, options=options)
        self._channels.append(channel)
        if self._call_metadata:
            return grpc.intercept_channel(
                channel, MetadataInterceptor(self._call_metadata)
            )
        return channel

    def stub(self, service: str, address: str):
        stubs = {
            "trainer": trainer_pb2_grpc.TrainerServiceStub,
            "merger": merger_pb2_grpc.MergerServiceStub,
            "validator": validator_pb2_grpc.ValidatorServiceStub,
            "inference": inference_pb2_grpc.InferenceServiceStub,
            "registry": registry_pb2_grpc.RegistryServiceStub,
            "gateway": gateway_pb2_grpc.GatewayServiceStub,
        }
        return stubs[service](self._channel(address))

    # --- workflow -----------------------------------------------------------------
    def run_workflow(
        self, request: gateway_pb2.RunWorkflowRequest
    ) -> gateway_pb2.WorkflowJob:
        """Starts a workflow; without a request_id one is chosen, so that the
        retries after a dropped connection return the same workflow."""
        if not request.request_id:
            copy = gateway_pb2.RunWorkflowRequest()
            copy.CopyFrom(request)
            copy.request_id = uuid.uuid4().hex
            request = copy
        return self._retrying(
            lambda: self.gateway.RunWorkflow(request, timeout=self.timeout_s)
        ).job

    def watch_workflow(
        self, job_id: str, after_sequence: int = 0
    ) -> Iterator[gateway_pb2.WatchWorkflowJobResponse]:
        """Every event after `after_sequence` until the workflow ends, across
        gateway restarts (it re-attaches after the last event it yielded)."""
        after = after_sequence
        reconnect = _Reconnect(self.reconnect_s)
        while True:
            try:
                for update in self.gateway.WatchWorkflowJob(
                    gateway_pb2.WatchWorkflowJobRequest(
                        job_id=job_id, after_sequence=after
                    ),
                    timeout=self.watch_timeout_s,
                ):
                    reconnect.reset()
                    after = update.event.sequence
                    yield update
                return
            except grpc.RpcError as exc:
                reconnect.wait_or_raise(exc)

    def wait_workflow(self, job_id: str) -> gateway_pb2.WorkflowJob:
        last = None
        for update in self.watch_workflow(job_id):
            last = update.job
        return last if last is not None else self.get_workflow(job_id)

    def get_workflow(self, job_id: str) -> gateway_pb2.WorkflowJob:
        return self._retrying(
            lambda: self.gateway.GetWorkflowJob(
                gateway_pb2.GetWorkflowJobRequest(job_id=job_id), timeout=self.timeout_s
            )
        ).job

    def cancel_workflow(self, job_id: str) -> gateway_pb2.WorkflowJob:
        """Cancels the workflow and the sub-job it is running."""
        return self._retrying(
            lambda: self.gateway.CancelWorkflowJob(
                gateway_pb2.CancelWorkflowJobRequest(job_id=job_id),
                timeout=self.timeout_s,
            )
        ).job

    def resume_workflow(self, job_id: str) -> gateway_pb2.WorkflowJob:
        """Runs a failed or cancelled workflow again from the step that did not
        finish."""
        return self._retrying(
            lambda: self.gateway.ResumeWorkflow(
                gateway_pb2.ResumeWorkflowRequest(job_id=job_id),
                timeout=self.timeout_s,
            )
        ).job

    def _retrying(self, call):
        reconnect = _Reconnect(self.reconnect_s)
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                reconnect.wait_or_raise(exc)

    # --- serving ------------------------------------------------------------------
    def generate(
        self,
        deployment: str,
        prompt: str,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
    ) -> gateway_pb2.GenerateResponse:
        return self.gateway.Generate(
            gateway_pb2.GenerateRequest(
                deployment=deployment,
                params=common_pb2.GenerationParams(
                    prompt=prompt,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                ),
            ),
            timeout=self.timeout_s,
        )

    # --- registry -----------------------------------------------------------------
    def artifact(self, artifact_id: str) -> common_pb2.Artifact:
        return self.registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=artifact_id), timeout=self.timeout_s
        ).artifact

    def upload_blob(self, path: str | os.PathLike[str]) -> str:
        """Uploads a local file as a content-addressed blob; returns its sha256.

        A blob the registry already holds is not sent again.
        """
        path = Path(path)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        sha, size = h.hexdigest(), path.stat().st_size

        def messages() -> Iterator[registry_pb2.UploadBlobRequest]:
            yield registry_pb2.UploadBlobRequest(sha256=sha, size_bytes=size)
            with open(path, "rb") as fh:
                while chunk := fh.read(_CHUNK):
                    yield registry_pb2.UploadBlobRequest(data=chunk)

        self.registry.UploadBlob(messages(), timeout=self.timeout_s)
        return sha

    def append_dataset(
        self,
        dataset_id: str,
        *,
        file: str | os.PathLike[str] | None = None,
        rows: Iterable[Mapping[str, Any]] | bytes | None = None,
        source_path: str = "",
        deduplicate: bool = False,
        version: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> registry_pb2.AppendDatasetResponse:
        """Appends rows to a dataset version, registering the result as a new one.

        Give exactly one of: ``file``, a local JSONL file (uploaded as a blob, so
        it works against a remote registry); ``rows``, JSON objects or JSONL
        bytes sent inline; ``source_path``, a JSONL file the registry reads from
        its shared volume. ``deduplicate`` leaves out rows the dataset holds.
        """
        request = registry_pb2.AppendDatasetRequest(
            dataset_id=dataset_id,
            source_path=source_path,
            deduplicate=deduplicate,
            version=version,
            tags=dict(tags or {}),
        )
        if file is not None:
            request.blob_sha256 = self.upload_blob(file)
        if rows is not None:
            request.rows = (
                rows
                if isinstance(rows, bytes)
                else "".join(json.dumps(dict(r)) + "\n" for r in rows).encode()
            )
        return self.registry.AppendDataset(request, timeout=self.timeout_s)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Reconnect:
    """Backoff while the gateway is unreachable (restarting), within a limit."""

    def __init__(self, limit_s: float) -> None:
        self._limit_s = limit_s
        self.reset()

    def reset(self) -> None:
        self._since: float | None = None
        self._delay = 0.5

    def wait_or_raise(self, exc: grpc.RpcError) -> None:
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            raise exc
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        if now - self._since >= self._limit_s:
            raise exc
        time.sleep(self._delay)
        self._delay = min(self._delay * 2, 10.0)
