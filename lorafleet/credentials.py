"""Credentials on every call of a channel: an API key or a JWT, and a project.

lorafleet authenticates each call from its `authorization: Bearer ...`
metadata (an API key `lfk_...` from `lorafleet auth keys create`, or a JWT
from your identity provider) and acts in the project named by the
`lorafleet-project` metadata (default: your only project, else "default").
Plain gRPC metadata works over plaintext and TLS alike, so this wraps the
channel with an interceptor rather than using call credentials (which gRPC
sends over TLS only).
"""

from __future__ import annotations

import collections
import os

import grpc

AUTHORIZATION = "authorization"
PROJECT_METADATA = "lorafleet-project"


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


class MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def _details(self, details):
        names = {k for k, _ in self._pairs}
        kept = [(k, v) for k, v in (details.metadata or ()) if k not in names]
        return _Details(
            details.method,
            details.timeout,
            [*kept, *self._pairs],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def credential_metadata(
    api_key: str | None = None, token: str | None = None, project: str | None = None
) -> list[tuple[str, str]]:
    """The metadata pairs to send; unset arguments fall back to the env vars
    LORAFLEET_API_KEY, LORAFLEET_TOKEN and LORAFLEET_PROJECT."""
    api_key = api_key if api_key is not None else os.environ.get("LORAFLEET_API_KEY")
    token = token if token is not None else os.environ.get("LORAFLEET_TOKEN")
    project = project if project is not None else os.environ.get("LORAFLEET_PROJECT")
    if api_key and token:
        raise ValueError("give an API key or a token, not both")
    pairs = []
    if api_key or token:
        pairs.append((AUTHORIZATION, f"Bearer {(api_key or token).strip()}"))
    if project:
        pairs.append((PROJECT_METADATA, project.strip()))
    return pairs


def with_credentials(
    channel: grpc.Channel,
    api_key: str | None = None,
    token: str | None = None,
    project: str | None = None,
) -> grpc.Channel:
    """`channel` sending the credentials (and project) on every call."""
    pairs = credential_metadata(api_key, token, project)
    return (
        grpc.intercept_channel(channel, MetadataInterceptor(pairs))
        if pairs
        else channel
    )
