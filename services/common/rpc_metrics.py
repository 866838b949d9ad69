"""RPC metrics for every server: OpenTelemetry's `rpc.server.call.duration`
(seconds) per method and status code, so counts, error rates and latency
percentiles per method come from one histogram."""

from __future__ import annotations

import time

import grpc

from services.common.instruments import record, rpc_server_duration

# Health probes and reflection would swamp the series that matter.
_UNMEASURED = ("/grpc.health.v1.", "/grpc.reflection.")


def _status(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    if failed and hasattr(context, "is_active") and not context.is_active():
        return "CANCELLED"  # the caller went away (a stream closed early)
    return "UNKNOWN" if failed else "OK"


class MetricsInterceptor(grpc.ServerInterceptor):
    """Times each call from the handler's start to its last message or error
    (a stream's whole life), recording the status the caller receives."""

    def __init__(self, clock=time.perf_counter) -> None:
        self._clock = clock

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_UNMEASURED):
            return handler
        attributes = {"rpc.system.name": "grpc", "rpc.method": method.lstrip("/")}
        clock = self._clock

        def done(context, started: float, failed: bool) -> None:
            status = _status(context, failed)
            record(
                rpc_server_duration,
                clock() - started,
                {**attributes, "rpc.response.status_code": status},
            )

        if handler.unary_unary or handler.stream_unary:
            kind = "unary_unary" if handler.unary_unary else "stream_unary"
            inner = getattr(handler, kind)

            def unary(request, context):
                started, failed = clock(), True
                try:
                    reply = inner(request, context)
                    failed = False
                    return reply
                finally:
                    done(context, started, failed)

            return handler._replace(**{kind: unary})
        kind = "unary_stream" if handler.unary_stream else "stream_stream"
        inner_stream = getattr(handler, kind)

        def streaming(request, context):
            started, failed = clock(), True
            try:
                yield from inner_stream(request, context)
                failed = False
            finally:
                done(context, started, failed)

        return handler._replace(**{kind: streaming})
