"""How the CLI shows a remote error: one line, then the details a client
can act on, never a traceback.

    error: INVALID_ARGUMENT: train_config.rank must be between 1 and 256 ...
      field train_config.rank: must be between 1 and 256

The `google.rpc` details every service attaches (BadRequest field
violations, PreconditionFailure, QuotaFailure, RetryInfo, ErrorInfo) come
from the call's `grpc-status-details-bin` trailer.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc


def detail_lines(exc: grpc.RpcError) -> list[str]:
    """One indented line per detail the error carries (none when it carries
    none or they cannot be decoded: the main line is still shown)."""
    try:
        from google.rpc import error_details_pb2 as ed
        from grpc_status import rpc_status

        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (ImportError, ValueError, AttributeError, TypeError):
        return []
    if status is None:
        return []
    lines: list[str] = []
    for packed in status.details:
        for kind in (
            ed.BadRequest,
            ed.PreconditionFailure,
            ed.QuotaFailure,
            ed.RetryInfo,
            ed.ErrorInfo,
            ed.ResourceInfo,
        ):
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                lines += _describe(message)
                break
    return lines


def _describe(message: Any) -> list[str]:
    name = type(message).__name__
    if name == "BadRequest":
        return [f"  field {v.field}: {v.description}" for v in message.field_violations]
    if name == "PreconditionFailure":
        return [
            f"  precondition {' '.join(filter(None, (v.type, v.subject)))}: "
            f"{v.description}"
            for v in message.violations
        ]
    if name == "QuotaFailure":
        return [f"  quota {v.subject}: {v.description}" for v in message.violations]
    if name == "RetryInfo":
        delay = message.retry_delay.seconds + message.retry_delay.nanos / 1e9
        return [f"  retry after {delay:g}s"]
    if name == "ErrorInfo":
        extra = " ".join(f"{k}={v}" for k, v in sorted(message.metadata.items()))
        return [f"  reason {message.reason} ({message.domain}) {extra}".rstrip()]
    if name == "ResourceInfo":
        return [
            f"  resource {message.resource_type} {message.resource_name}: "
            f"{message.description}"
        ]
    return []


def report_rpc_error(exc: grpc.RpcError) -> int:
    """Prints ``error: <CODE>: <message>`` and the details; returns 2."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    print(f"error: {code.name if code else 'UNKNOWN'}: {details}", file=sys.stderr)
    for line in detail_lines(exc):
        print(line, file=sys.stderr)
    return 2
