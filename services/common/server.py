"""The one server bootstrap every service uses.

It wires health (grpc.health.v1), reflection, OpenTelemetry tracing, domain-error
mapping, message-size limits, bounded concurrency, logging and graceful shutdown,
so a service only supplies its servicer.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from services.common.auth.authenticator import Authenticator, KeyLookup
from services.common.auth.denials import Denial, DenialAudit
from services.common.auth.interceptor import AuthInterceptor
from services.common.auth.remote import RegistryAuth
from services.common.clients import set_local_service
from services.common.config import Config, ConfigError
from services.common.deadlines import serving
from services.common.error_details import details_for
from services.common.errors import LorafleetError
from services.common.metrics import setup_metrics
from services.common.rpc_metrics import MetricsInterceptor
from services.common.telemetry import (
    current_trace_id,
    setup_logging,
    setup_tracing,
    tracing_server_interceptor,
)
from services.common.tls import server_credentials

log = logging.getLogger(__name__)


def _status_for(exc: LorafleetError) -> status_pb2.Status:
    code = getattr(code_pb2, exc.code, code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=exc.message)
    status.details.extend(
        details_for(
            exc.code,
            exc.field,
            exc.message,
            exc.details,
            retry_after_s=exc.retry_after_s,
            quota_subject=exc.quota_subject,
            reason=exc.reason,
            info=exc.info,
        )
    )
    return status


def _abort(context: grpc.ServicerContext, method: str, exc: BaseException) -> None:
    if isinstance(exc, LorafleetError):
        context.abort_with_status(rpc_status.to_status(_status_for(exc)))
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        # A downstream service's status passes through unchanged.
        context.abort(exc.code(), exc.details() or str(exc))
    if context.code() not in (None, grpc.StatusCode.OK):
        raise exc  # the servicer already aborted deliberately
    # The exception text can hold SQL, paths or secrets: it stays in the log,
    # and the caller gets the id that finds it there.
    trace_id = current_trace_id() or uuid.uuid4().hex
    service = method.strip("/").split("/")[0].rsplit(".", 1)[-1]
    service = service.removesuffix("Service").lower() or "service"
    log.exception("unexpected error in %s (trace id %s)", method, trace_id)
    context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error in {method}; the {service} log has the details under "
        f"trace id {trace_id}",
    )


class ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Turns domain errors into their gRPC status in one place, and records
    each unary-request call's deadline for the calls it causes (deadlines.py)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            def unary_unary(request, context):
                try:
                    with serving(context.time_remaining()):
                        return inner_uu(request, context)
                except Exception as exc:  # noqa: BLE001
                    _abort(context, method, exc)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            def unary_stream(request, context):
                try:
                    with serving(context.time_remaining()):
                        yield from inner_us(request, context)
                except Exception as exc:  # noqa: BLE001
                    _abort(context, method, exc)

            return handler._replace(unary_stream=unary_stream)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            def stream_unary(request_iterator, context):
                try:
                    return inner_su(request_iterator, context)
                except Exception as exc:  # noqa: BLE001
                    _abort(context, method, exc)

            return handler._replace(stream_unary=stream_unary)
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            def stream_stream(request_iterator, context):
                try:
                    yield from inner_ss(request_iterator, context)
                except Exception as exc:  # noqa: BLE001
                    _abort(context, method, exc)

            return handler._replace(stream_stream=stream_stream)
        return handler


def standard_interceptors(
    authenticator: Authenticator,
    on_denied: Callable[[Denial], None] | None = None,
) -> list[grpc.ServerInterceptor]:
    """The chain every service runs, outermost first: tracing, metrics, error
    mapping, then auth (inside error mapping, so its refusals become statuses
    with details, and inside tracing, so they are traced)."""
    return [
        tracing_server_interceptor(),
        MetricsInterceptor(),
        ErrorMappingInterceptor(),
        AuthInterceptor(authenticator, on_denied),
    ]


@dataclass
class RunningServer:
    """A started gRPC server and the hooks to stop it cleanly."""

    name: str
    server: grpc.Server
    port: int
    health: health.HealthServicer
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    # Its Prometheus scrape endpoint ("" when metrics_port is unset).
    metrics_url: str = ""
    # The service's domain objects by name (e.g. "workflows"), for embedding
    # applications and tests that drive or inspect them directly.
    parts: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float) -> None:
        """Marks NOT_SERVING, refuses new calls, lets in-flight ones finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        for hook in self.on_stop:
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutdown must finish
                log.exception("shutdown hook failed")


def create_server(
    name: str,
    config: Config,
    register: Callable[[grpc.Server], Iterable[str]],
    port: int | None = None,
    *,
    max_workers: int | None = None,
    max_concurrent_rpcs: int | None = None,
    key_lookup: KeyLookup | None = None,
    record_denial: Callable[[Denial], None] | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] | None = None,
) -> RunningServer:
    """Builds and starts a server; `register` adds servicers, returns their names.

    `port` 0 binds an ephemeral port (tests); None uses the configured one.
    `interceptors` replaces the standard chain (`standard_interceptors`), e.g.
    to add one; `key_lookup` and `record_denial` are how the auth interceptor
    checks API keys and records refused mutations (default: by asking the
    registry).
    """
    # Nothing is ever fetched from a model hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    setup_logging(name, config)
    setup_tracing(name, config)
    endpoint = setup_metrics(name, config)
    if not 0 < config.gil_switch_interval_ms <= 1000:
        raise ConfigError(
            f"gil_switch_interval_ms must be in (0, 1000], got "
            f"{config.gil_switch_interval_ms} (LORAFLEET_GIL_SWITCH_INTERVAL_MS)"
        )
    sys.setswitchinterval(config.gil_switch_interval_ms / 1000.0)
    set_local_service(name)
    on_stop: list[Callable[[], None]] = []
    denials: DenialAudit | None = None
    if interceptors is None:
        remote = None
        required = config.auth_mode == "required"
        if required and (key_lookup is None or record_denial is None):
            remote = RegistryAuth(config, name)
            on_stop.append(remote.close)
            key_lookup = key_lookup or remote.lookup_key
            record_denial = record_denial or remote.record_denial
        denials = DenialAudit(record_denial) if record_denial else None
        if denials is not None:
            on_stop.insert(0, denials.close)
        interceptors = standard_interceptors(
            Authenticator(config, name, key_lookup),
            denials.submit if denials else None,
        )
    options = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=max_workers or config.max_workers,
            thread_name_prefix=f"{name}-rpc",
        ),
        interceptors=list(interceptors),
        options=options,
        maximum_concurrent_rpcs=max_concurrent_rpcs or config.max_concurrent_rpcs,
    )
    service_names = list(register(server))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    bind_port = config.service_port(name) if port is None else port
    address = f"{config.host}:{bind_port}"
    credentials = server_credentials(config)  # None: plaintext
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    if bound == 0:
        raise RuntimeError(
            f"{name}: cannot bind {config.host}:{bind_port} (port in use?)"
        )
    server.start()
    for service in ["", *service_names]:
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    mode = "mTLS" if config.tls_client_ca_file else "TLS"
    mode = mode if credentials is not None else "plaintext"
    log.info("%s serving with %s on %s:%d", name, mode, config.host, bound)
    if config.auth_mode == "disabled":
        log.warning(
            "%s: auth is DISABLED: anyone who can reach %s:%d may do anything "
            "(LORAFLEET_AUTH_MODE=required turns it on)",
            name,
            config.host,
            bound,
        )
    running = RunningServer(
        name=name,
        server=server,
        port=bound,
        health=health_servicer,
        metrics_url=endpoint.url if endpoint else "",
    )
    running.on_stop.extend(on_stop)
    if denials is not None:
        running.parts["denials"] = denials
    return running


def serve_forever(running: RunningServer, config: Config) -> None:
    """Blocks until SIGTERM/SIGINT, then shuts down within the grace period."""
    stop = threading.Event()

    def _handle(signum, _frame):
        log.info(
            "%s received signal %d; draining for up to %.0fs",
            running.name,
            signum,
            config.grace_period_s,
        )
        stop.set()

    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)
    stop.wait()
    running.stop(config.grace_period_s)
    log.info("%s stopped", running.name)
