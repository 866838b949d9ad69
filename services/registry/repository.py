"""Artifact registration, lookup, lineage and aliases: the registry's domain logic."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.common.convert import json_safe
from services.common.errors import (
    Aborted,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.common.paging import decode_token, encode_token, page_size, paginate
from services.common.paths import confine
from services.registry.content import inspect_content
from services.registry.db import (
    AliasEventRow,
    AliasRow,
    ArtifactFileRow,
    ArtifactRow,
    Database,
    LineageEdgeRow,
    as_utc,
    lock_key,
    utcnow,
)
from services.registry.domain import (
    AliasMove,
    Artifact,
    ArtifactKind,
    Edge,
    Lineage,
    ParentRef,
    Registration,
    check_alias,
    check_metrics,
    check_name,
    check_relation,
)
from services.registry.store import ArtifactStore, FileEntry, Manifest, list_source


def new_id() -> str:
    return uuid.uuid4().hex


def resolve_ref(session: Session, ref: str, *, field: str = "id") -> ArtifactRow:
    """Finds the row an id, "name:version", "name@alias" or bare name points at.

    A bare name means its latest version; ids are tried before names.
    """
    if not ref:
        raise InvalidArgument(f"{field} is required", field=field)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        row = session.scalar(
            select(ArtifactRow)
            .join(AliasRow, AliasRow.artifact_id == ArtifactRow.id)
            .where(AliasRow.name == name, AliasRow.alias == alias)
        )
        if row is None:
            raise NotFound(
                f"{field} {ref!r}: artifact name {name!r} has no alias {alias!r}",
                field=field,
            )
        return row
    if ":" in ref:
        name, raw_version = ref.rsplit(":", 1)
        if not raw_version.isdigit():
            raise InvalidArgument(
                f"{field} {ref!r}: the version after ':' must be a "
                "positive integer, e.g. 'my-model:3'",
                field=field,
            )
        row = session.scalar(
            select(ArtifactRow).where(
                ArtifactRow.name == name, ArtifactRow.version == int(raw_version)
            )
        )
        if row is None:
            raise NotFound(
                f"{field} {ref!r}: artifact {name!r} has no version {raw_version}",
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
        raise NotFound(f"{field} {ref!r} matches no artifact id or name", field=field)
    return row


def load_artifacts(
    session: Session, rows: Sequence[ArtifactRow], store: ArtifactStore
) -> list[Artifact]:
    """Domain objects for rows, with files and aliases fetched in two queries."""
    ids = [r.id for r in rows]
    files: dict[str, list[FileEntry]] = {i: [] for i in ids}
    aliases: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        for f in session.scalars(
            select(ArtifactFileRow)
            .where(ArtifactFileRow.artifact_id.in_(ids))
            .order_by(ArtifactFileRow.path)
        ):
            files[f.artifact_id].append(FileEntry(f.path, f.sha256, f.size_bytes))
        for a in session.scalars(
            select(AliasRow)
            .where(AliasRow.artifact_id.in_(ids))
            .order_by(AliasRow.alias)
        ):
            aliases[a.artifact_id].append(a.alias)
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
        )
        for r in rows
    ]


class Registry:
    """Records artifact versions whose bytes live in `store`, with their lineage."""

    def __init__(
        self, db: Database, store: ArtifactStore, readable_roots: Iterable[Path]
    ) -> None:
        self.db = db
        self.store = store
        self.roots = [Path(r) for r in readable_roots]

    def _load(self, session: Session, row: ArtifactRow) -> Artifact:
        return load_artifacts(session, [row], self.store)[0]

    # -- registration -----------------------------------------------------

    def register_artifact(
        self,
        *,
        kind: ArtifactKind | None,
        name: str,
        source_path: str,
        expected_digest: str = "",
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        parents: Sequence[ParentRef] = (),
    ) -> Registration:
        """Stores the files and records them as the next version of `name`.

        Identical content under the same name returns the existing version, so
        a retried registration (or a CLI run twice) never mints a duplicate.
        """
        if kind is None:
            raise InvalidArgument("kind is required", field="kind")
        check_name(name)
        for p in parents:
            if not p.artifact_id:
                raise InvalidArgument(
                    "parents[].artifact_id is required", field="parents"
                )
            if p.relation:
                check_relation(p.relation)
        metrics = check_metrics(dict(metrics or {}))
        source = confine(source_path, self.roots, field="source_path")
        files = list_source(source, self.roots)
        derived = inspect_content(kind, files)
        self.db.read(
            lambda s: [resolve_ref(s, p.artifact_id, field="parents") for p in parents]
        )  # fail before copying bytes
        manifest = self.store.scan(files)
        if expected_digest and expected_digest != manifest.digest:
            raise DataLoss(
                f"files under {source_path!r} hash to {manifest.digest}, "
                f"not the expected_digest {expected_digest}"
            )
        self.store.put(files, manifest)
        meta = {**derived, **json_safe(dict(metadata or {}))}
        return self.db.write(
            lambda s: self._record(
                s, kind, name, manifest, meta, metrics, dict(tags or {}), parents
            )
        )

    def _record(
        self,
        session: Session,
        kind: ArtifactKind,
        name: str,
        manifest: Manifest,
        meta: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        parents: Sequence[ParentRef],
    ) -> Registration:
        lock_key(session, "artifact-name", name)
        same = session.scalar(
            select(ArtifactRow)
            .where(ArtifactRow.name == name, ArtifactRow.digest == manifest.digest)
            .order_by(ArtifactRow.version)
            .limit(1)
        )
        if same is not None:
            return Registration(self._load(session, same), existed=True)
        other_kind = session.scalar(
            select(ArtifactRow.kind)
            .where(ArtifactRow.name == name, ArtifactRow.kind != kind.value)
            .limit(1)
        )
        if other_kind is not None:
            raise FailedPrecondition(
                f"name {name!r} already holds {other_kind} versions; register the "
                f"{kind.value} under another name",
                field="name",
            )
        edges = []
        for p in parents:
            parent = resolve_ref(session, p.artifact_id, field="parents")
            relation = p.relation or parent.kind.lower()
            if (parent.id, relation) not in {(e[0], e[1]) for e in edges}:
                edges.append((parent.id, relation))
        latest = (
            session.scalar(
                select(func.max(ArtifactRow.version)).where(ArtifactRow.name == name)
            )
            or 0
        )
        row = ArtifactRow(
            id=new_id(),
            kind=kind.value,
            name=name,
            version=latest + 1,
            digest=manifest.digest,
            size_bytes=manifest.size_bytes,
            meta=meta,
            metrics=metrics,
            tags=tags,
            create_time=utcnow(),
        )
        session.add(row)
        session.flush()  # a concurrent registration of this version fails here
        session.add_all(
            ArtifactFileRow(
                artifact_id=row.id,
                path=f.path,
                sha256=f.sha256,
                size_bytes=f.size_bytes,
            )
            for f in manifest.files
        )
        session.add_all(
            LineageEdgeRow(parent_id=pid, child_id=row.id, relation=rel)
            for pid, rel in edges
        )
        session.flush()
        return Registration(self._load(session, row), existed=False)

    # -- lookup -----------------------------------------------------------

    def get_artifact(self, ref: str, *, verify: bool = False) -> Artifact:
        artifact = self.db.read(lambda s: self._load(s, resolve_ref(s, ref)))
        if verify:
            self.store.verify(Manifest(tuple(artifact.files), artifact.digest))
        return artifact

    def list_artifacts(
        self,
        *,
        kind: ArtifactKind | None = None,
        name: str = "",
        tags: Mapping[str, str] | None = None,
        size: int = 0,
        token: str = "",
    ) -> tuple[list[Artifact], str]:
        """Newest first; tag filters are applied in Python (JSON is not portable)."""
        tags = dict(tags or {})
        scope = list_scope("artifacts", kind.value if kind else "", name, tags)
        query = select(ArtifactRow).order_by(
            ArtifactRow.create_time.desc(), ArtifactRow.name, ArtifactRow.version.desc()
        )
        if kind:
            query = query.where(ArtifactRow.kind == kind.value)
        if name:
            query = query.where(ArtifactRow.name == name)

        def work(session: Session) -> tuple[list[Artifact], str]:
            if tags:
                rows = [
                    r
                    for r in session.scalars(query)
                    if all((r.tags or {}).get(k) == v for k, v in tags.items())
                ]
                page, nxt = paginate(rows, size, token, scope)
            else:
                page, nxt = page_query(session, query, size, token, scope)
            return load_artifacts(session, page, self.store), nxt

        return self.db.read(work)

    def get_lineage(self, ref: str) -> Lineage:
        """Ancestors (walking up) and descendants (walking down), breadth first.

        Edges are every edge among the returned artifacts, so a merged model's
        link to the shared base shows up when asking about its adapter too.
        """

        def work(session: Session) -> Lineage:
            root = resolve_ref(session, ref)
            order, seen = [root.id], {root.id}
            for near, far in (
                (LineageEdgeRow.child_id, LineageEdgeRow.parent_id),
                (LineageEdgeRow.parent_id, LineageEdgeRow.child_id),
            ):
                frontier = [root.id]
                while frontier:
                    found = session.scalars(
                        select(far).where(near.in_(frontier)).order_by(far)
                    ).all()
                    frontier = [i for i in dict.fromkeys(found) if i not in seen]
                    seen.update(frontier)
                    order.extend(frontier)
            edges = [
                Edge(e.parent_id, e.child_id, e.relation)
                for e in session.scalars(
                    select(LineageEdgeRow)
                    .where(
                        LineageEdgeRow.parent_id.in_(order),
                        LineageEdgeRow.child_id.in_(order),
                    )
                    .order_by(
                        LineageEdgeRow.parent_id,
                        LineageEdgeRow.child_id,
                        LineageEdgeRow.relation,
                    )
                )
            ]
            rows = {
                r.id: r
                for r in session.scalars(
                    select(ArtifactRow).where(ArtifactRow.id.in_(order))
                )
            }
            return Lineage(
                load_artifacts(session, [rows[i] for i in order], self.store), edges
            )

        return self.db.read(work)

    # -- aliases ----------------------------------------------------------

    def set_alias(
        self,
        ref: str,
        alias: str,
        *,
        expected_artifact_id: str | None = None,
        reason: str = "",
        trace_id: str = "",
    ) -> AliasMove:
        """Points `alias` of the artifact's name at it, compare-and-set style."""
        check_alias(alias)

        def work(session: Session) -> AliasMove:
            target = resolve_ref(session, ref, field="artifact_id")
            current = session.scalar(
                select(AliasRow)
                .where(AliasRow.name == target.name, AliasRow.alias == alias)
                .with_for_update()
            )
            previous = current.artifact_id if current else ""
            if expected_artifact_id is not None and expected_artifact_id != previous:
                where = f"points at {previous}" if previous else "does not exist"
                raise Aborted(
                    f"alias {target.name}@{alias} {where}, not "
                    f"{expected_artifact_id or 'nothing'} as expected; re-read it "
                    "and retry",
                    field="expected_artifact_id",
                )
            if previous != target.id:
                now = utcnow()
                if current is None:
                    session.add(
                        AliasRow(
                            name=target.name,
                            alias=alias,
                            artifact_id=target.id,
                            update_time=now,
                        )
                    )
                else:
                    current.artifact_id, current.update_time = target.id, now
                session.add(
                    AliasEventRow(
                        name=target.name,
                        alias=alias,
                        from_id=previous or None,
                        to_id=target.id,
                        reason=reason,
                        time=now,
                        trace_id=trace_id,
                    )
                )
                session.flush()
            return AliasMove(self._load(session, target), previous)

        return self.db.write(work)

    def resolve_alias(self, name: str, alias: str) -> Artifact:
        check_name(name)
        check_alias(alias)
        return self.db.read(
            lambda s: self._load(s, resolve_ref(s, f"{name}@{alias}", field="alias"))
        )


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
