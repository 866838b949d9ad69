"""google.rpc status details: built from a domain error's `field`, kept when an
error is relayed, and renamed to the caller's field paths.

The field at fault travels as a `google.rpc.BadRequest` field violation, or,
for FAILED_PRECONDITION (the request is well formed, the state of things
refuses it), as a `google.rpc.PreconditionFailure` violation whose subject
is the field: what Google's error model prescribes, so clients in any
language find it where they look.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

BadRequest = error_details_pb2.BadRequest
PreconditionFailure = error_details_pb2.PreconditionFailure
QuotaFailure = error_details_pb2.QuotaFailure
RetryInfo = error_details_pb2.RetryInfo
ErrorInfo = error_details_pb2.ErrorInfo

# google.rpc.ErrorInfo.domain of the reasons lorafleet sends (auth failures).
ERROR_DOMAIN = "lorafleet.dev"


def _in_text(renames: dict[str, str]):
    """Renames dotted paths ("config.rank") in prose; a bare word is left alone."""
    pattern = re.compile(
        r"(?<![\w.])(" + "|".join(re.escape(k) for k in renames) + r")(?=\.\w)"
    )
    return lambda text: pattern.sub(lambda m: renames[m.group(1)], text)


def _path(renames: dict[str, str], path: str) -> str:
    head, dot, rest = path.partition(".")
    return renames[head] + dot + rest if head in renames else path


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rename_paths(
    renames: dict[str, str],
    field: str | None,
    message: str,
    details: list[Any],
) -> tuple[str | None, str, list[Any]]:
    """(field, message, details) with the leading path segments in `renames`
    replaced: "config.rank" -> "train_config.rank"."""
    if not renames:
        return field, message, details
    text = _in_text(renames)
    renamed = []
    for detail in details:
        bad, failure = BadRequest(), PreconditionFailure()
        if detail.Unpack(bad):
            for v in bad.field_violations:
                v.field, v.description = _path(renames, v.field), text(v.description)
            renamed.append(_pack(bad))
        elif detail.Unpack(failure):
            for v in failure.violations:
                v.subject, v.description = (
                    _path(renames, v.subject),
                    text(v.description),
                )
            renamed.append(_pack(failure))
        else:
            renamed.append(detail)
    return (_path(renames, field) if field else field), text(message), renamed


def bad_request_field(details: list[Any]) -> str | None:
    """The field at fault named by `details` (BadRequest or PreconditionFailure)."""
    for detail in details:
        bad, failure = BadRequest(), PreconditionFailure()
        if detail.Unpack(bad) and bad.field_violations:
            return bad.field_violations[0].field
        if detail.Unpack(failure) and failure.violations:
            return failure.violations[0].subject
    return None


def details_for(
    code: str,
    field: str | None,
    message: str,
    relayed: list[Any],
    *,
    retry_after_s: float | None = None,
    quota_subject: str = "",
    reason: str = "",
    info: dict[str, str] | None = None,
) -> list[Any]:
    """The details to send: relayed ones as they are, else one naming `field`
    (plus, for load shedding, when to retry and what ran out; for auth
    failures, an ErrorInfo with the reason and the permission/project)."""
    if relayed:
        return list(relayed)
    shed: list[Any] = []
    if reason:
        shed.append(
            _pack(ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=info or {}))
        )
    if quota_subject:
        shed.append(
            _pack(
                QuotaFailure(
                    violations=[
                        QuotaFailure.Violation(
                            subject=quota_subject, description=message
                        )
                    ]
                )
            )
        )
    if retry_after_s is not None:
        delay = Duration()
        delay.FromNanoseconds(int(retry_after_s * 1e9))
        shed.append(_pack(RetryInfo(retry_delay=delay)))
    if not field:
        return shed
    if code == "FAILED_PRECONDITION":
        return [
            _pack(
                PreconditionFailure(
                    violations=[
                        PreconditionFailure.Violation(
                            type="STATE", subject=field, description=message
                        )
                    ]
                )
            ),
            *shed,
        ]
    return [
        _pack(
            BadRequest(
                field_violations=[
                    BadRequest.FieldViolation(field=field, description=message)
                ]
            )
        ),
        *shed,
    ]
