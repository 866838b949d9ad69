"""Row lookups shared by the registry's repositories: references, loading, paging."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import literal, select, union_all
from sqlalchemy.orm import Session

from services.common.auth.caller import require
from services.common.auth.permissions import READ
from services.common.errors import InvalidArgument, NotFound, shorten
from services.common.paging import decode_token, encode_token, page_size
from services.registry.db import AliasRow, ArtifactFileRow, ArtifactRow, as_utc
from services.registry.domain import (
    MAX_VERSION,
    Artifact,
    ArtifactKind,
    version_number,
)
from services.registry.manifests import FileEntry
from services.registry.store import ArtifactStore


def new_id() -> str:
    return uuid.uuid4().hex


def resolve_ref(session: Session, ref: str, *, field: str = "id") -> ArtifactRow:
    """Finds the row an id, "name:version", "name@alias" or bare name points at,
    if the caller may read its project (else PERMISSION_DENIED).

    A bare name means its latest version; ids are tried before names.
    """
    row = _find_ref(session, ref, field)
    require(READ, row.project, f"{field} {shorten(ref)!r} ({row.name}:{row.version})")
    return row


def _find_ref(session: Session, ref: str, field: str) -> ArtifactRow:
    if not ref:
        raise InvalidArgument(f"{field} is required", field=field)
    shown = shorten(ref)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        row = session.scalar(
            select(ArtifactRow)
            .join(AliasRow, AliasRow.artifact_id == ArtifactRow.id)
            .where(AliasRow.name == name, AliasRow.alias == alias)
        )
        if row is None:
            raise NotFound(
                f"{field} {shown!r}: artifact name {shorten(name)!r} has no alias "
                f"{shorten(alias)!r}",
                field=field,
            )
        return row
    if ":" in ref:
        name, raw_version = ref.rsplit(":", 1)
        version = version_number(raw_version)
        if version is None:
            raise InvalidArgument(
                f"{field} {shown!r}: the version after ':' must be an integer "
                f"from 1 to {MAX_VERSION}, e.g. 'my-model:3'",
                field=field,
            )
        row = session.scalar(
            select(ArtifactRow).where(
                ArtifactRow.name == name, ArtifactRow.version == version
            )
        )
        if row is None:
            raise NotFound(
                f"{field} {shown!r}: artifact {shorten(name)!r} has no version "
                f"{shorten(raw_version)}",
                field=field,
            )
        return row
    row = session.get(ArtifactRow, ref) or session.scalar(
        select(ArtifactRow)
        .where(ArtifactRow.name == ref)
        .order_by(ArtifactRow.version.desc())
        .limit(1)
    )
    if row is None:
        raise NotFound(f"{field} {shown!r} matches no artifact id or name", field=field)
    return row


def load_artifacts(
    session: Session, rows: Sequence[ArtifactRow], store: ArtifactStore
) -> list[Artifact]:
    """Domain objects for rows, with files and aliases fetched in two queries."""
    ids = [r.id for r in rows]
    files: dict[str, list[FileEntry]] = {i: [] for i in ids}
    aliases: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        # Files and aliases in one round trip.
        files_q = select(
            literal("f").label("what"),
            ArtifactFileRow.artifact_id,
            ArtifactFileRow.path,
            ArtifactFileRow.sha256,
            ArtifactFileRow.size_bytes,
        ).where(ArtifactFileRow.artifact_id.in_(ids))
        aliases_q = select(
            literal("a").label("what"),
            AliasRow.artifact_id,
            AliasRow.alias,
            literal(""),
            literal(0),
        ).where(AliasRow.artifact_id.in_(ids))
        for what, aid, text, sha, size in session.execute(
            union_all(files_q, aliases_q)
        ):
            if what == "f":
                files[aid].append(FileEntry(text, sha, size))
            else:
                aliases[aid].append(text)
        for lst in files.values():
            lst.sort(key=lambda f: f.path)
        for names in aliases.values():
            names.sort()
    return [
        Artifact(
            id=r.id,
            kind=ArtifactKind(r.kind),
            name=r.name,
            version=r.version,
            digest=r.digest,
            local_path=store.location(r.digest),
            files=files[r.id],
            size_bytes=r.size_bytes,
            metadata=dict(r.meta or {}),
            metrics=dict(r.metrics or {}),
            tags=dict(r.tags or {}),
            create_time=as_utc(r.create_time),
            aliases=aliases[r.id],
            archived=bool(r.archived),
            project=r.project or "default",
            description=r.description or "",
        )
        for r in rows
    ]


def list_scope(*parts: Any) -> str:
    """Binds page tokens to one listing and filter set."""
    raw = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def page_query(
    session: Session, query: Any, size: int, token: str, scope: str
) -> tuple[list[Any], str]:
    """OFFSET/LIMIT paging of an ordered query, one extra row to detect more."""
    size = page_size(size)
    start = decode_token(token, scope)
    rows = list(session.scalars(query.offset(start).limit(size + 1)))
    nxt = encode_token(start + size, scope) if len(rows) > size else ""
    return rows[:size], nxt
