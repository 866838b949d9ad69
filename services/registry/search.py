"""The ListArtifacts filter and order_by languages, compiled to SQL.

    filter   := clause (AND clause)*
    clause   := field op value
    op       := = | != | < | <= | > | >=
    field    := name | digest | kind | version | create_time | archived | task_type
              | base_model | tags.<key> | metrics.<key> | metadata.<key>
              | <metric name>
    value    := word | "quoted string"

Every filter runs in the database (JSON fields through SQLAlchemy's portable
JSON accessors), so paging and sorting stay correct on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import Session

from services.common.errors import InvalidArgument, shorten
from services.registry.db import ArtifactRow, LineageEdgeRow
from services.registry.domain import MAX_VERSION, ArtifactKind, version_number

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op><=|>=|!=|=|<|>)|(?P<word>[^\s<>=!"]+))'
)
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_OPS = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_EQUALITY = ("=", "!=")


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="filter")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _bad(f"filter: unexpected character {text[pos]!r} at {pos}")
        pos = m.end()
        kind = m.lastgroup or "word"
        value = m.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.append((kind, value))
    return out


def parse_filter(
    text: str, session: Session | None = None
) -> list[ColumnElement[bool]]:
    """SQL conditions for a filter string; INVALID_ARGUMENT names the bad token.

    With a session, `base_model` references are resolved to ids up front: the
    planner then sees literal ids (and their frequency) instead of a subquery
    it misestimates, which made a filtered search over 100k rows 400x slower.
    """
    if not text.strip():
        return []
    tokens = _tokens(text)
    clauses: list[list[tuple[str, str]]] = [[]]
    for kind, value in tokens:
        if kind == "word" and value.upper() == "AND":
            clauses.append([])
        else:
            clauses[-1].append((kind, value))
    conditions = []
    for clause in clauses:
        shown = shorten(" ".join(v for _, v in clause) or "(empty)")
        if len(clause) >= 2 and clause[1][0] != "op":
            raise _bad(
                f"filter clause {shown!r}: {shorten(clause[1][1])!r} is not an "
                "operator; use one of = != < <= > >="
            )
        if len(clause) != 3 or clause[0][0] != "word":
            raise _bad(
                f"filter clause {shown!r} is not 'field op value' "
                "(e.g. 'eval_loss < 1.2'); join clauses with AND"
            )
        (_, field), (_, op), (_, value) = clause
        conditions.append(_condition(field, op, value, session))
    return conditions


def _number(field: str, value: str) -> float:
    number = _finite(value)
    if number is None:
        raise _bad(
            f"filter: {shorten(field)} needs a finite number, got {shorten(value)!r}"
        )
    return number


def _finite(value: str) -> float | None:
    """The value as a finite float; None for words, NaN and overflowing numbers.

    Neither database compares NaN usefully, and "1e999" would become infinity.
    """
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _version(field: str, value: str) -> int:
    """A version to compare with: an integer the version column can hold.

    The column is a 32-bit INTEGER on PostgreSQL, where a larger number is an
    "out of range" error rather than a comparison (SQLite: an OverflowError
    past 64 bits), so the range is checked here and named in the message.
    """
    try:
        number = int(value)
    except ValueError:
        as_float = _finite(value)
        number = (
            int(as_float) if as_float is not None and as_float.is_integer() else None
        )
    if number is None or not -MAX_VERSION - 1 <= number <= MAX_VERSION:
        raise _bad(
            f"filter: {shorten(field)} needs an integer between {-MAX_VERSION - 1} "
            f"and {MAX_VERSION} (the 32-bit range of versions), got "
            f"{shorten(value)!r}"
        )
    return number


def _equality_only(field: str, op: str) -> None:
    if op not in _EQUALITY:
        raise _bad(f"filter: {shorten(field)} supports only = and !=, not {op!r}")


def _condition(
    field: str, op: str, value: str, session: Session | None
) -> ColumnElement[bool]:
    compare = _OPS[op]
    lower = field.lower()
    if lower == "name":
        return compare(ArtifactRow.name, value)
    if lower == "digest":
        _equality_only(field, op)
        return compare(ArtifactRow.digest, value)
    if lower == "kind":
        _equality_only(field, op)
        raw = value.upper().removeprefix("ARTIFACT_KIND_")
        try:
            kind = ArtifactKind(raw)
        except ValueError:
            raise _bad(
                f"filter: kind {shorten(value)!r} is not one of "
                + ", ".join(k.value for k in ArtifactKind)
            ) from None
        return compare(ArtifactRow.kind, kind.value)
    if lower == "version":
        return compare(ArtifactRow.version, _version(field, value))
    if lower == "create_time":
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            when = when.astimezone(dt.timezone.utc)  # 9999-12-31T23:00-05:00 overflows
        except (ValueError, OverflowError):
            raise _bad(
                f"filter: create_time needs an RFC 3339 time such as "
                f"2026-01-31T12:00:00Z, got {shorten(value)!r}"
            ) from None
        return compare(ArtifactRow.create_time, when)
    if lower == "archived":
        _equality_only(field, op)
        if value.lower() not in ("true", "false"):
            raise _bad(f"filter: archived needs true or false, got {shorten(value)!r}")
        return compare(ArtifactRow.archived, value.lower() == "true")
    if lower == "task_type":
        _equality_only(field, op)
        task = value.lower().removeprefix("task_type_")
        return compare(ArtifactRow.meta["task_type"].as_string(), task)
    if lower == "base_model":
        _equality_only(field, op)
        parents = select(ArtifactRow.id).where(_ref_matches(value))
        parent: Any = (
            list(session.scalars(parents))
            if session is not None
            else parents.scalar_subquery()
        )
        edge = exists().where(
            LineageEdgeRow.child_id == ArtifactRow.id,
            LineageEdgeRow.relation == "base_model",
            LineageEdgeRow.parent_id.in_(parent),
        )
        return edge if op == "=" else ~edge
    prefix, _, key = field.partition(".")
    if prefix in ("tags", "metrics", "metadata") and key:
        _check_key(field, key)
        if prefix == "tags":
            _equality_only(field, op)
            return compare(ArtifactRow.tags[key].as_string(), value)
        if prefix == "metrics":
            return compare(ArtifactRow.metrics[key].as_float(), _number(field, value))
        number = _finite(value)
        if number is not None:
            return compare(ArtifactRow.meta[key].as_float(), number)
        _equality_only(field, op)
        return compare(ArtifactRow.meta[key].as_string(), value)
    _check_key(field, field)
    return compare(ArtifactRow.metrics[field].as_float(), _number(field, value))


def _check_key(field: str, key: str) -> None:
    if not _KEY.match(key):
        raise _bad(
            f"filter: field {shorten(field)!r} is not a known field or metric name"
        )


def _ref_matches(ref: str) -> ColumnElement[bool]:
    if ":" in ref:
        name, _, version = ref.rpartition(":")
        number = version_number(version)
        if number is not None:
            return and_(ArtifactRow.name == name, ArtifactRow.version == number)
    return or_(ArtifactRow.id == ref, ArtifactRow.name == ref)


def parse_order_by(text: str) -> list[Any]:
    """ORDER BY terms; defaults to newest first, always ending in a unique key."""
    terms: list[Any] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        words = part.split()
        if len(words) > 2 or (
            len(words) == 2 and words[1].lower() not in ("asc", "desc")
        ):
            raise InvalidArgument(
                f"order_by term {shorten(part)!r} is not '<field> [asc|desc]'",
                field="order_by",
            )
        field = words[0]
        desc = len(words) == 2 and words[1].lower() == "desc"
        if field in ("create_time", "name", "version"):
            column: Any = getattr(ArtifactRow, field)
        elif field.startswith("metrics.") and _KEY.match(field[8:]):
            column = ArtifactRow.metrics[field[8:]].as_float()
        else:
            raise InvalidArgument(
                f"order_by field {shorten(field)!r} is not create_time, name, "
                "version or metrics.<key>",
                field="order_by",
            )
        terms.append((column.desc() if desc else column.asc()).nulls_last())
    if not terms:
        terms = [ArtifactRow.create_time.desc(), ArtifactRow.name]
    return [*terms, ArtifactRow.version.desc(), ArtifactRow.id]
