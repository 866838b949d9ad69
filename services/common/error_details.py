"""google.rpc status details: kept when an error is relayed, renamed to the
caller's field paths, and rebuilt from a domain error's `field`."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import any_pb2
from google.rpc import error_details_pb2


def _in_text(renames: dict[str, str]):
    """Renames dotted paths ("config.rank") in prose; a bare word is left alone."""
    pattern = re.compile(
        r"(?<![\w.])(" + "|".join(re.escape(k) for k in renames) + r")(?=\.\w)"
    )
    return lambda text: pattern.sub(lambda m: renames[m.group(1)], text)


def _path(renames: dict[str, str], path: str) -> str:
    head, dot, rest = path.partition(".")
    return renames[head] + dot + rest if head in renames else path


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
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for violation in bad.field_violations:
                violation.field = _path(renames, violation.field)
                violation.description = text(violation.description)
            packed = any_pb2.Any()
            packed.Pack(bad)
            renamed.append(packed)
        else:
            renamed.append(detail)
    return (_path(renames, field) if field else field), text(message), renamed


def bad_request_field(details: list[Any]) -> str | None:
    """The field of the first BadRequest violation among `details`, if any."""
    for detail in details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad) and bad.field_violations:
            return bad.field_violations[0].field
    return None


def details_for(field: str | None, message: str, relayed: list[Any]) -> list[Any]:
    """The details to send: relayed ones as they are, else a BadRequest naming
    `field` when there is one."""
    if relayed:
        return list(relayed)
    if not field:
        return []
    packed = any_pb2.Any()
    packed.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field, description=message
                )
            ]
        )
    )
    return [packed]
