"""The server interceptor that authenticates every call and checks its role.

It sits inside the error-mapping interceptor, so its refusals become
UNAUTHENTICATED / PERMISSION_DENIED statuses with an ErrorInfo detail naming
the reason (and the missing permission). Health and reflection stay open.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from opentelemetry import trace

from services.common.auth.authenticator import Authenticator
from services.common.auth.caller import Caller, acting_as
from services.common.auth.denials import Denial
from services.common.auth.permissions import MUTATIONS, permission_for
from services.common.errors import LorafleetError
from services.common.telemetry import current_trace_id


class AuthInterceptor(grpc.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator,
        on_denied: Callable[[Denial], None] | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.on_denied = on_denied

    def _admit(self, method: str, permission: str, context) -> Caller:
        caller: Caller | None = None
        try:
            caller = self.authenticator.authenticate(context.invocation_metadata())
            rpc = method.rsplit("/", 1)[-1]
            caller.require(permission, caller.project, what=rpc)
        except LorafleetError as exc:
            if permission in MUTATIONS and self.on_denied is not None:
                self.on_denied(
                    Denial(
                        principal=caller.display if caller else "unauthenticated",
                        method=method,
                        project=caller.project if caller else "",
                        code=exc.code,
                        reason=exc.reason,
                        message=exc.message,
                        trace_id=current_trace_id(),
                    )
                )
            raise
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("enduser.id", caller.subject)
            span.set_attribute("lorafleet.project", caller.project)
        return caller

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        permission = permission_for(method)
        if handler is None or permission is None:
            return handler
        admit = self._admit
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            def unary_unary(request, context):
                with acting_as(admit(method, permission, context)):
                    return inner_uu(request, context)

            return handler._replace(unary_unary=unary_unary)
        if handler.unary_stream:
            inner_us = handler.unary_stream

            def unary_stream(request, context):
                with acting_as(admit(method, permission, context)):
                    yield from inner_us(request, context)

            return handler._replace(unary_stream=unary_stream)
        if handler.stream_unary:
            inner_su = handler.stream_unary

            def stream_unary(request_iterator, context):
                with acting_as(admit(method, permission, context)):
                    return inner_su(request_iterator, context)

            return handler._replace(stream_unary=stream_unary)
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            def stream_stream(request_iterator, context):
                with acting_as(admit(method, permission, context)):
                    yield from inner_ss(request_iterator, context)

            return handler._replace(stream_stream=stream_stream)
        return handler
