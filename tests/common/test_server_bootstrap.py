"""The shared bootstrap: error mapping, rich details, graceful shutdown, health."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status

from services.common.clients import open_channel
from services.common.config import ConfigError, load_config
from services.common.errors import InvalidArgument
from services.common.server import create_server

SERVICE = "lorafleet.test.Probe"


def _identity(b: bytes) -> bytes:
    return b


def _handlers(started: threading.Event):
    def sleep(request: bytes, context) -> bytes:
        started.set()
        time.sleep(float(request.decode()))
        return b"slept"

    def invalid(request: bytes, context) -> bytes:
        raise InvalidArgument("rank must be positive", field="config.rank")

    def crash(request: bytes, context) -> bytes:
        raise ZeroDivisionError("boom")

    def handler(fn):
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_identity, response_serializer=_identity
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {"Sleep": handler(sleep), "Invalid": handler(invalid), "Crash": handler(crash)},
    )


@pytest.fixture
def probe(tmp_path):
    started = threading.Event()
    config = load_config(env={}, auth_mode="disabled", data_dir=tmp_path, port=0)

    def register(server):
        server.add_generic_rpc_handlers((_handlers(started),))
        return [SERVICE]

    running = create_server("probe", config, register, port=0)
    channel = grpc.insecure_channel(running.address)
    yield running, channel, started
    channel.close()
    running.stop(0)


def call(channel, method: str, body: bytes = b"", timeout: float = 10):
    return channel.unary_unary(
        f"/{SERVICE}/{method}",
        request_serializer=_identity,
        response_deserializer=_identity,
    )(body, timeout=timeout)


def test_domain_errors_map_to_status_with_field_details(probe):
    _, channel, _ = probe
    with pytest.raises(grpc.RpcError) as err:
        call(channel, "Invalid")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "rank must be positive"
    status = rpc_status.from_call(err.value)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "config.rank"


def test_unexpected_errors_are_internal_and_the_server_survives(probe, caplog):
    _, channel, _ = probe
    with caplog.at_level(logging.ERROR, logger="services.common.server"):
        with pytest.raises(grpc.RpcError) as err:
            call(channel, "Crash")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    details = err.value.details()
    # The caller learns where to look, never the exception text itself.
    assert "boom" not in details and "ZeroDivisionError" not in details
    match = re.fullmatch(
        rf"internal error in /{SERVICE}/Crash; the probe log has the details "
        r"under trace id ([0-9a-f]{32})",
        details,
    )
    assert match, details
    logged = [r for r in caplog.records if match.group(1) in r.getMessage()]
    assert logged and logged[0].exc_info[0] is ZeroDivisionError
    assert call(channel, "Sleep", b"0") == b"slept"


def test_graceful_shutdown_finishes_in_flight_calls(probe):
    running, channel, started = probe
    result: dict = {}

    def slow():
        result["reply"] = call(channel, "Sleep", b"1.0")

    worker = threading.Thread(target=slow)
    worker.start()
    assert started.wait(60)
    health = health_pb2_grpc.HealthStub(channel)
    stopper = threading.Thread(target=running.stop, args=(10.0,))
    stopper.start()
    time.sleep(0.2)
    worker.join(120)
    stopper.join(120)
    assert result["reply"] == b"slept"
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _violations(error) -> list[tuple[str, str]]:
    found = []
    for detail in rpc_status.from_call(error).details:
        bad = error_details_pb2.BadRequest()
        failure = error_details_pb2.PreconditionFailure()
        if detail.Unpack(bad):
            found += [("BadRequest", v.field) for v in bad.field_violations]
        elif detail.Unpack(failure):
            found += [("PreconditionFailure", v.subject) for v in failure.violations]
    return found


def test_a_relayed_error_keeps_its_details_under_the_callers_field_names(tmp_path):
    """A service relaying another's error (as the gateway relays the trainer's)
    sends the same google.rpc details, with field paths renamed."""
    from services.common.clients import _translate
    from services.common.errors import FailedPrecondition

    upstream = {}

    def invalid(request: bytes, context) -> bytes:
        raise InvalidArgument("config.rank must be positive", field="config.rank")

    def stale(request: bytes, context) -> bytes:
        raise FailedPrecondition("job j1 is RUNNING", field="job_id")

    def relay(request: bytes, context) -> bytes:
        method = request.decode()
        with grpc.insecure_channel(upstream["address"]) as channel:
            try:
                call(channel, method)
            except grpc.RpcError as exc:
                raise _translate(exc, "probe", method).rename_fields(
                    {"config": "train_config"}
                ) from None
        return b""

    def handler(fn):
        return grpc.unary_unary_rpc_method_handler(
            fn, request_deserializer=_identity, response_serializer=_identity
        )

    def register(server):
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Invalid": handler(invalid),
                        "Stale": handler(stale),
                        "Relay": handler(relay),
                    },
                ),
            )
        )
        return [SERVICE]

    running = create_server(
        "probe",
        load_config(env={}, auth_mode="disabled", data_dir=tmp_path, port=0),
        register,
        port=0,
    )
    upstream["address"] = running.address
    try:
        with grpc.insecure_channel(running.address) as channel:
            with pytest.raises(grpc.RpcError) as direct:
                call(channel, "Stale")
            assert direct.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert _violations(direct.value) == [("PreconditionFailure", "job_id")]
            with pytest.raises(grpc.RpcError) as relayed:
                call(channel, "Relay", b"Invalid")
            assert relayed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert relayed.value.details() == "train_config.rank must be positive"
            assert _violations(relayed.value) == [("BadRequest", "train_config.rank")]
            with pytest.raises(grpc.RpcError) as relayed:
                call(channel, "Relay", b"Stale")
            assert relayed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert _violations(relayed.value) == [("PreconditionFailure", "job_id")]
    finally:
        running.stop(0)


def test_calls_are_traced_but_health_probes_are_not(probe, span_exporter):
    """Server and client spans for the service's own methods, none for the
    health probes and reflection that would drown them; both ends decide
    by the method's name alone (`services.common.telemetry._traced`)."""
    running, channel, _ = probe
    traced_channel = open_channel(running.address, load_config(env={}))
    span_exporter.clear()
    try:
        call(traced_channel, "Sleep", b"0")
        health_pb2_grpc.HealthStub(traced_channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        reflection_call = traced_channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        list(
            reflection_call(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                timeout=10,
            )
        )
    finally:
        traced_channel.close()
    names = sorted(s.name for s in span_exporter.get_finished_spans())
    assert names == [f"/{SERVICE}/Sleep", f"/{SERVICE}/Sleep"]  # client + server


def test_the_gil_switch_interval_comes_from_the_config(tmp_path):
    before = sys.getswitchinterval()
    config = load_config(
        env={"LORAFLEET_GIL_SWITCH_INTERVAL_MS": "0.25"},
        auth_mode="disabled",
        data_dir=tmp_path,
        port=0,
    )
    running = create_server("probe", config, lambda server: [], port=0)
    try:
        assert sys.getswitchinterval() == pytest.approx(0.00025)
    finally:
        running.stop(0)
        sys.setswitchinterval(before)
    config.gil_switch_interval_ms = 0
    with pytest.raises(ConfigError, match="gil_switch_interval_ms must be in"):
        create_server("probe", config, lambda server: [], port=0)


_TRACING_PROBE = """
import sys
from opentelemetry import trace
from services.common.config import load_config
from services.common.telemetry import current_trace_id, setup_tracing

setup_tracing("probe", load_config(env={"LORAFLEET_TRACE_CONSOLE": sys.argv[1]}))
with trace.get_tracer("probe").start_as_current_span("work") as span:
    print(span.is_recording(), len(current_trace_id()))
"""


@pytest.mark.parametrize("console, recording", [("0", "False"), ("1", "True")])
def test_spans_are_recorded_only_when_they_go_somewhere(console, recording):
    """With no exporter a process records no spans, yet every piece of work
    still gets a trace id for its logs and for the services it calls."""
    done = subprocess.run(
        [sys.executable, "-c", _TRACING_PROBE, console],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert done.stdout.split() == [recording, "32"]
