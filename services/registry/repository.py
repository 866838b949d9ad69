"""Artifact registration, lookup, lineage and aliases: the registry's domain logic."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.orm import Session

from services.common.convert import json_safe
from services.common.errors import (
    Aborted,
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from services.common.paging import decode_token, encode_token, page_size
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
    audit,
    lock_key,
    utcnow,
)
from services.registry.domain import (
    AliasEvent,
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
from services.registry.search import parse_filter, parse_order_by
from services.registry.store import (
    MAX_PATH_CHARS,
    ArtifactStore,
    FileEntry,
    Manifest,
    check_sha256,
    list_source,
)


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
        )
        for r in rows
    ]


class Registry:
    """Records artifact versions whose bytes live in `store`, with their lineage."""

    def __init__(
        self,
        db: Database,
        store: ArtifactStore,
        readable_roots: Iterable[Path],
        *,
        alias_cache_ttl_s: float = 1.0,
    ) -> None:
        self.db = db
        self.store = store
        self.roots = [Path(r) for r in readable_roots]
        self.aliases = AliasCache(alias_cache_ttl_s)

    def _load(self, session: Session, row: ArtifactRow) -> Artifact:
        return load_artifacts(session, [row], self.store)[0]

    # -- registration -----------------------------------------------------

    def register_artifact(
        self,
        *,
        kind: ArtifactKind | None,
        name: str,
        source_path: str = "",
        expected_digest: str = "",
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        parents: Sequence[ParentRef] = (),
        files: Sequence[FileEntry] = (),
        version: int = 0,
        principal: str = "",
        trace_id: str = "",
    ) -> Registration:
        """Stores the files and records them as the next version of `name`.

        The files come from `source_path` on a shared volume, or from `files`,
        a manifest of blobs already uploaded to the store. Identical content
        under the same name returns the existing version, so a retried
        registration (or a CLI run twice) never mints a duplicate.
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
        if version < 0:
            raise InvalidArgument(
                f"version must be positive (or 0 for the next), got {version}",
                field="version",
            )
        if source_path and files:
            raise InvalidArgument(
                "give either source_path or files, not both", field="files"
            )
        if files:
            pairs, manifest = self._uploaded(files)
            where = "the given files"
        else:
            if not source_path:
                raise InvalidArgument(
                    "source_path (or files) is required", field="source_path"
                )
            source = confine(source_path, self.roots, field="source_path")
            pairs = list_source(source, self.roots)
            manifest = None
            where = f"files under {source_path!r}"
        derived = inspect_content(kind, pairs)
        self.db.read(
            lambda s: [resolve_ref(s, p.artifact_id, field="parents") for p in parents]
        )  # fail before copying bytes
        if manifest is None:
            manifest = self.store.scan(pairs)
        if expected_digest and expected_digest != manifest.digest:
            raise DataLoss(
                f"{where} hash to {manifest.digest}, "
                f"not the expected_digest {expected_digest}"
            )
        self.store.put(pairs, manifest)
        meta = {**derived, **json_safe(dict(metadata or {}))}
        reg = self.db.write(
            lambda s: self._record(
                s,
                kind,
                name,
                manifest,
                meta,
                metrics,
                dict(tags or {}),
                parents,
                version,
                principal,
                trace_id,
            )
        )
        return reg

    def record_version(
        self,
        *,
        kind: ArtifactKind,
        name: str,
        manifest: Manifest,
        metadata: dict[str, Any],
        tags: Mapping[str, str],
        parents: Sequence[ParentRef],
        version: int = 0,
        principal: str = "",
        trace_id: str = "",
        action: str = "artifact.register",
        audit_extra: Mapping[str, Any] | None = None,
    ) -> Registration:
        """Records files already put in the store, in one transaction.

        For callers that assemble content themselves (AppendDataset); the same
        rules as register_artifact apply: identical content returns the
        existing version, an explicit version must not hold other content.
        """
        return self.db.write(
            lambda s: self._record(
                s,
                kind,
                name,
                manifest,
                json_safe(metadata),
                {},
                dict(tags),
                parents,
                version,
                principal,
                trace_id,
                action,
                audit_extra,
            )
        )

    def _uploaded(
        self, files: Sequence[FileEntry]
    ) -> tuple[list[tuple[str, Path]], Manifest]:
        """Checks a client's manifest against the blobs it uploaded."""
        seen: set[str] = set()
        missing: list[str] = []
        pairs: list[tuple[str, Path]] = []
        for f in files:
            parts = f.path.split("/")
            if (
                not f.path
                or len(f.path) > MAX_PATH_CHARS
                or f.path.startswith("/")
                or any(p in ("", ".", "..") for p in parts)
                or "\\" in f.path
            ):
                raise InvalidArgument(
                    f"files[].path {f.path[:80]!r} must be a relative '/'-separated "
                    "path without '.', '..' or empty parts",
                    field="files",
                )
            if f.path in seen:
                raise InvalidArgument(
                    f"files[].path {f.path!r} is listed twice", field="files"
                )
            seen.add(f.path)
            check_sha256(f.sha256, field="files[].sha256")
            stored = self.store.blob_size(f.sha256)
            if stored is None:
                missing.append(f"{f.path} ({f.sha256})")
            elif stored != f.size_bytes:
                raise InvalidArgument(
                    f"files[] {f.path!r}: blob {f.sha256} holds {stored} bytes, not "
                    f"size_bytes {f.size_bytes}",
                    field="files",
                )
            pairs.append((f.path, self.store.blob_file(f.sha256)))
        if missing:
            raise FailedPrecondition(
                "upload these blobs with UploadBlob first: " + ", ".join(missing[:10]),
                field="files",
            )
        manifest = Manifest.of(FileEntry(f.path, f.sha256, f.size_bytes) for f in files)
        return sorted(pairs), manifest

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
        version: int = 0,
        principal: str = "",
        trace_id: str = "",
        action: str = "artifact.register",
        audit_extra: Mapping[str, Any] | None = None,
    ) -> Registration:
        lock_key(session, "artifact-name", name)
        same = session.scalar(
            select(ArtifactRow)
            .where(ArtifactRow.name == name, ArtifactRow.digest == manifest.digest)
            .order_by(ArtifactRow.version)
            .limit(1)
        )
        if version:
            taken = session.scalar(
                select(ArtifactRow).where(
                    ArtifactRow.name == name, ArtifactRow.version == version
                )
            )
            if taken is not None and taken.digest != manifest.digest:
                raise AlreadyExists(
                    f"{name}:{version} already exists with digest {taken.digest}; "
                    f"these files have digest {manifest.digest}. Versions are "
                    "immutable: register them as a new version",
                    field="version",
                )
            if same is not None and same.version != version:
                raise AlreadyExists(
                    f"these files (digest {manifest.digest}) are already "
                    f"registered as {name}:{same.version}, not version {version}",
                    field="version",
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
            version=version or latest + 1,
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
        if kind == ArtifactKind.ADAPTER:
            # training_runs builds on this module's helpers, hence the late import
            from services.registry.training_runs import record_training_run

            record_training_run(session, row, meta)
        audit(
            session,
            principal=principal,
            action=action,
            target=row.id,
            after={
                "name": name,
                "version": row.version,
                "kind": kind.value,
                "digest": manifest.digest,
                "parents": [{"id": p, "relation": r} for p, r in edges],
                **dict(audit_extra or {}),
            },
            trace_id=trace_id,
        )
        session.flush()
        return Registration(self._load(session, row), existed=False)

    # -- lookup -----------------------------------------------------------

    def get_artifact(self, ref: str, *, verify: bool = False) -> Artifact:
        if "@" in ref and not verify:
            name, alias = ref.split("@", 1)
            return self._resolve_cached(name, alias, field="id")
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
        filter: str = "",
        order_by: str = "",
    ) -> tuple[list[Artifact], str]:
        """Newest first unless `order_by` says otherwise; see search.py."""
        tags = dict(tags or {})
        parse_filter(filter)  # refuse a malformed filter before any I/O
        order = parse_order_by(order_by)
        scope = list_scope(
            "artifacts", kind.value if kind else "", name, tags, filter, order_by
        )

        def work(session: Session) -> tuple[list[Artifact], str]:
            conditions = parse_filter(filter, session)
            query = select(ArtifactRow).where(*conditions).order_by(*order)
            if kind:
                query = query.where(ArtifactRow.kind == kind.value)
            if name:
                query = query.where(ArtifactRow.name == name)
            for key, value in tags.items():
                query = query.where(ArtifactRow.tags[key].as_string() == value)
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
            from services.registry.training_runs import runs_for_adapters

            return Lineage(
                load_artifacts(session, [rows[i] for i in order], self.store),
                edges,
                runs_for_adapters(session, order),
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
        actor: str = "",
        allow_archived: bool = False,
    ) -> AliasMove:
        """Points `alias` of the artifact's name at it, compare-and-set style."""
        check_alias(alias)

        def work(session: Session) -> AliasMove:
            target = resolve_ref(session, ref, field="artifact_id")
            return self._move_alias(
                session,
                target,
                alias,
                expected_artifact_id=expected_artifact_id,
                reason=reason,
                trace_id=trace_id,
                actor=actor,
                allow_archived=allow_archived,
                action="alias.set",
            )

        try:
            return self.db.write(work)
        finally:
            self.aliases.invalidate()

    def _move_alias(
        self,
        session: Session,
        target: ArtifactRow,
        alias: str,
        *,
        expected_artifact_id: str | None,
        reason: str,
        trace_id: str,
        actor: str,
        allow_archived: bool,
        action: str,
    ) -> AliasMove:
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
            if target.archived and not allow_archived:
                raise FailedPrecondition(
                    f"{target.name}:{target.version} is archived; set "
                    "allow_archived to point an alias at it anyway",
                    field="allow_archived",
                )
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
                    actor=actor[:256],
                )
            )
            audit(
                session,
                principal=actor,
                action=action,
                target=f"{target.name}@{alias}",
                before={"artifact_id": previous} if previous else None,
                after={"artifact_id": target.id, "reason": reason},
                trace_id=trace_id,
            )
            session.flush()
        return AliasMove(self._load(session, target), previous)

    def rollback_alias(
        self,
        name: str,
        alias: str,
        *,
        to_artifact_id: str = "",
        expected_artifact_id: str | None = None,
        reason: str = "",
        trace_id: str = "",
        actor: str = "",
    ) -> AliasMove:
        """Moves the alias back to where it pointed before its latest move."""
        check_name(name)
        check_alias(alias)

        def work(session: Session) -> AliasMove:
            if to_artifact_id:
                target = resolve_ref(session, to_artifact_id, field="to_artifact_id")
                if target.name != name:
                    raise InvalidArgument(
                        f"to_artifact_id {to_artifact_id!r} is a version of "
                        f"{target.name!r}, not {name!r}",
                        field="to_artifact_id",
                    )
            else:
                current = session.scalar(
                    select(AliasRow).where(
                        AliasRow.name == name, AliasRow.alias == alias
                    )
                )
                if current is None:
                    raise NotFound(
                        f"artifact name {name!r} has no alias {alias!r}", field="alias"
                    )
                last = session.scalar(
                    select(AliasEventRow)
                    .where(
                        AliasEventRow.name == name,
                        AliasEventRow.alias == alias,
                        AliasEventRow.to_id == current.artifact_id,
                    )
                    .order_by(AliasEventRow.id.desc())
                    .limit(1)
                )
                if last is None or not last.from_id:
                    raise NotFound(
                        f"{name}@{alias} has no earlier version to roll back to",
                        field="alias",
                    )
                target = session.get(ArtifactRow, last.from_id)
                if target is None:
                    raise NotFound(
                        f"{name}@{alias} previously pointed at {last.from_id}, "
                        "which no longer exists",
                        field="alias",
                    )
            return self._move_alias(
                session,
                target,
                alias,
                expected_artifact_id=expected_artifact_id,
                reason=reason,
                trace_id=trace_id,
                actor=actor,
                allow_archived=True,  # going back is always allowed
                action="alias.rollback",
            )

        try:
            return self.db.write(work)
        finally:
            self.aliases.invalidate()

    def alias_history(
        self, name: str, alias: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[AliasEvent], str]:
        check_name(name)
        check_alias(alias)

        def work(session: Session) -> tuple[list[AliasEvent], str]:
            rows, nxt = page_query(
                session,
                select(AliasEventRow)
                .where(AliasEventRow.name == name, AliasEventRow.alias == alias)
                .order_by(AliasEventRow.id.desc()),
                size,
                token,
                list_scope("alias-history", name, alias),
            )
            return [
                AliasEvent(
                    name=r.name,
                    alias=r.alias,
                    from_id=r.from_id or "",
                    to_id=r.to_id,
                    actor=r.actor,
                    reason=r.reason,
                    time=as_utc(r.time),
                    trace_id=r.trace_id,
                )
                for r in rows
            ], nxt

        return self.db.read(work)

    def archive(
        self,
        ref: str,
        archived: bool = True,
        *,
        reason: str = "",
        principal: str = "",
        trace_id: str = "",
    ) -> Artifact:
        def work(session: Session) -> Artifact:
            row = resolve_ref(session, ref)
            if bool(row.archived) != archived:
                row.archived = archived
                audit(
                    session,
                    principal=principal,
                    action="artifact.archive" if archived else "artifact.unarchive",
                    target=row.id,
                    before={"archived": not archived},
                    after={"archived": archived, "reason": reason},
                    trace_id=trace_id,
                )
                session.flush()
            return self._load(session, row)

        try:
            return self.db.write(work)
        finally:
            self.aliases.invalidate()

    def resolve_alias(self, name: str, alias: str) -> Artifact:
        check_name(name)
        check_alias(alias)
        return self._resolve_cached(name, alias, field="alias")

    def _resolve_cached(self, name: str, alias: str, *, field: str) -> Artifact:
        key = (name, alias)
        hit = self.aliases.get(key)
        if hit is not None:
            return hit
        generation = self.aliases.generation
        artifact = self.db.read(
            lambda s: self._load(s, resolve_ref(s, f"{name}@{alias}", field=field))
        )
        self.aliases.put(key, artifact, generation)
        return artifact


class AliasCache:
    """Alias resolutions for `ttl_s`, dropped whenever this process moves one.

    Other registry processes sharing the database are seen within `ttl_s`. A
    read that raced a local move is not cached (generation check), so a move
    made here is visible here at once. ttl_s <= 0 disables the cache.
    """

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.generation = 0
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], tuple[float, Artifact]] = {}

    def get(self, key: tuple[str, str]) -> Artifact | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: tuple[str, str], artifact: Artifact, generation: int) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation == self.generation:
                if len(self._entries) > 100_000:
                    self._entries.clear()
                self._entries[key] = (time.monotonic() + self.ttl_s, artifact)

    def invalidate(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


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
