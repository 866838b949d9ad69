"""Test channels whose RPC deadlines stretch with the machine's load.

Tests give calls the deadlines a user would (10 s, 30 s); on a shared 2-core
machine running the suite beside other work a call can take ten times as
long without anything being wrong. Every deadline set through these
channels is multiplied by LORAFLEET_TEST_DEADLINE_SCALE (default 10), so a
deadline still stops a hung call but never fails a slow one.
"""

from __future__ import annotations

import collections
import os

import grpc

SCALE = float(os.environ.get("LORAFLEET_TEST_DEADLINE_SCALE", "10"))


class _Details(
    collections.namedtuple(
        "_Details",
        (
            "method",
            "timeout",
            "metadata",
            "credentials",
            "wait_for_ready",
            "compression",
        ),
    ),
    grpc.ClientCallDetails,
):
    pass


class _Stretch(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
):
    def _details(self, d):
        timeout = d.timeout * SCALE if d.timeout is not None else None
        return _Details(
            d.method,
            timeout,
            d.metadata,
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def stretched_channel(address: str) -> grpc.Channel:
    """An insecure channel to `address` with stretched deadlines; close() it."""
    return grpc.intercept_channel(grpc.insecure_channel(address), _Stretch())
