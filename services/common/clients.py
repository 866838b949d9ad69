"""Traced, deadline-bound clients for calling one lorafleet service from another.

Every call carries a deadline (the configured default unless given, and never
past the deadline of the call being served that caused it), the W3C
trace context in its metadata, and comes back either as the response or as the
domain error matching the remote status, so callers never handle grpc errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from grpc_status import rpc_status
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

from lorafleet.v1 import (
    gateway_pb2_grpc,
    inference_pb2_grpc,
    merger_pb2_grpc,
    registry_pb2_grpc,
    trainer_pb2_grpc,
    validator_pb2_grpc,
)
from services.common.auth.caller import caller_or_none
from services.common.auth.tokens import ServiceTokens
from services.common.config import Config
from services.common.deadlines import budget
from services.common.error_details import bad_request_field
from services.common.errors import from_code
from services.common.telemetry import tracing_client_interceptor
from services.common.tls import secure_or_insecure_channel

_STUBS = {
    "registry": registry_pb2_grpc.RegistryServiceStub,
    "trainer": trainer_pb2_grpc.TrainerServiceStub,
    "merger": merger_pb2_grpc.MergerServiceStub,
    "validator": validator_pb2_grpc.ValidatorServiceStub,
    "inference": inference_pb2_grpc.InferenceServiceStub,
    "gateway": gateway_pb2_grpc.GatewayServiceStub,
}


def open_channel(address: str, config: Config) -> grpc.Channel:
    """A traced channel to another service, with TLS when `config` has it."""
    channel = secure_or_insecure_channel(
        address,
        config,
        options=[
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.max_receive_message_length", config.max_message_bytes),
        ],
    )
    # OTel's client interceptor has its own interface, wrapped by its own helper.
    return intercept_channel(channel, tracing_client_interceptor())


def _translate(exc: grpc.RpcError, service: str, method: str) -> Exception:
    """The domain error for a failed call, keeping its google.rpc details.

    The message stays the remote service's own (it names what is wrong and how
    to fix it); BadRequest and other details travel on, so the caller's
    caller can still act on them.
    """
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    message = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        message = f"{service} is unavailable ({message}); is it running?"
    err = from_code(code.name, message or f"{service}.{method} failed ({code.name})")
    status = None
    if hasattr(exc, "trailing_metadata"):
        try:
            status = rpc_status.from_call(exc)
        except ValueError:  # details that contradict the code/message: ignore
            status = None
    if status is not None:
        err.details = list(status.details)
        err.field = bad_request_field(err.details)
    err.remote = f"{service}.{method}"
    return err


# The service this process runs (set by create_server): the name its calls to
# other services are signed with.
_local_service = "lorafleet"


def set_local_service(name: str) -> None:
    global _local_service
    _local_service = name


def _signer(config: Config, caller: str) -> ServiceTokens | None:
    if not config.auth_service_secret:
        return None
    return ServiceTokens(config.auth_service_secret, caller)


class ServiceClient:
    """Calls `client.Method(request)` on a stub with a deadline and error mapping."""

    def __init__(
        self,
        service: str,
        config: Config,
        address: str | None = None,
        channel: grpc.Channel | None = None,
        *,
        caller: str | None = None,
    ) -> None:
        """`caller` is the service making the calls, named in the tokens it
        signs (default: the one this process serves, see set_local_service)."""
        self.service = service
        self.address = address or config.address_of(service)
        self._channel = channel or open_channel(self.address, config)
        self._stub = _STUBS[service](self._channel)
        self._timeout = config.rpc_timeout_s
        self._watch_timeout = config.watch_timeout_s
        self._signer = _signer(config, caller or _local_service)

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        """A service token acting for the caller being served (or the job's
        submitter); on the service's own account outside any request."""
        if self._signer is None:
            return None
        token = self._signer.mint(caller_or_none())
        return (("authorization", f"Bearer {token}"),)

    def __getattr__(self, method: str):
        multicallable = getattr(self._stub, method)
        if isinstance(multicallable, grpc.UnaryStreamMultiCallable):
            return lambda request, timeout=None: self._stream(
                method, multicallable, request, timeout or self._watch_timeout
            )
        return lambda request, timeout=None: self._unary(
            method, multicallable, request, timeout or self._timeout
        )

    def _unary(self, method: str, call: Any, request: Any, timeout: float) -> Any:
        timeout = budget(timeout, f"{self.service}.{method}")
        try:
            return call(request, timeout=timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise _translate(exc, self.service, method) from None

    def _stream(self, method: str, call: Any, request: Any, timeout: float) -> Iterator:
        timeout = budget(timeout, f"{self.service}.{method}")
        try:
            yield from call(request, timeout=timeout, metadata=self._metadata())
        except grpc.RpcError as exc:
            raise _translate(exc, self.service, method) from None

    def close(self) -> None:
        self._channel.close()
