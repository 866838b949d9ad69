"""Artifact registration, lookup, lineage and archiving: the registry's core.

Aliases live in `aliases`, shared row lookups in `queries`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.common.auth.caller import current_caller, require
from services.common.auth.permissions import READ, WRITE
from services.common.convert import json_safe
from services.common.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    shorten,
)
from services.common.paths import confine
from services.registry.aliases import Aliases
from services.registry.content import inspect_content
from services.registry.db import (
    ArtifactFileRow,
    ArtifactRow,
    Database,
    LineageEdgeRow,
    audit,
    lock_key,
    utcnow,
)
from services.registry.domain import (
    Artifact,
    ArtifactKind,
    Edge,
    Lineage,
    ParentRef,
    Registration,
    check_metrics,
    check_name,
    check_relation,
    check_version,
)
from services.registry.manifests import (
    MAX_PATH_CHARS,
    FileEntry,
    Manifest,
    check_sha256,
    list_source,
)
from services.registry.queries import (
    list_scope,
    load_artifacts,
    new_id,
    page_query,
    resolve_ref,
)
from services.registry.search import parse_filter, parse_order_by
from services.registry.store import ArtifactStore
from services.registry.training_runs import record_training_run, runs_for_adapters


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
        self.aliases = Aliases(db, store, cache_ttl_s=alias_cache_ttl_s)

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
        reuse_existing: bool = False,
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
        check_version(version)
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
            where = f"files under {shorten(source_path)!r}"
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
                reuse_existing=reuse_existing,
                derived_keys=frozenset(derived) - set(metadata or {}),
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
                    f"files[].path {shorten(f.path)!r} must be a relative "
                    "'/'-separated path without '.', '..' or empty parts",
                    field="files",
                )
            if f.path in seen:
                raise InvalidArgument(
                    f"files[].path {shorten(f.path)!r} is listed twice", field="files"
                )
            seen.add(f.path)
            check_sha256(f.sha256, field="files[].sha256")
            # Size only when it matches (cheap); hashed when it does not, so a
            # blob truncated on disk counts as missing, not as the caller's error.
            stored = self.store.intact_blob_size(f.sha256, f.size_bytes)
            if stored is None:
                missing.append(f"{f.path} ({f.sha256})")
            elif stored != f.size_bytes:
                raise InvalidArgument(
                    f"files[] {shorten(f.path)!r}: blob {f.sha256} holds {stored} "
                    f"bytes, not size_bytes {f.size_bytes}",
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
        reuse_existing: bool = True,
        derived_keys: frozenset[str] = frozenset(),
    ) -> Registration:
        lock_key(session, "artifact-name", name)
        caller = current_caller()
        owner = session.scalar(
            select(ArtifactRow.project).where(ArtifactRow.name == name).limit(1)
        )
        project = owner or caller.project
        caller.require(WRITE, project, f"artifact name {name!r}")
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
            changed = (
                []
                if reuse_existing
                else _changed_facts(
                    session, same, meta, metrics, tags, parents, derived_keys
                )
            )
            if changed:
                raise FailedPrecondition(
                    f"these files are already registered as {name}:{same.version} "
                    f"({same.id}) with other {', '.join(changed)}; versions are "
                    "immutable, so nothing was changed. Tags and the description "
                    "can be updated with UpdateArtifact; for other facts register "
                    "changed files as a new version (or under another name)",
                    field=changed[0].split(" ")[0],
                )
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
            project=project,
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
            record_training_run(session, row, meta)
        audit(
            session,
            principal=principal,
            project=project,
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
            artifact = self.aliases.resolve_cached(name, alias, field="id")
            require(READ, artifact.project, f"id {ref!r}")
            return artifact
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
        visible = current_caller().projects_with(READ)
        scope = list_scope(
            "artifacts",
            kind.value if kind else "",
            name,
            tags,
            filter,
            order_by,
            sorted(visible or ()),
        )

        def work(session: Session) -> tuple[list[Artifact], str]:
            conditions = parse_filter(filter, session)
            query = select(ArtifactRow).where(*conditions).order_by(*order)
            if visible is not None:
                query = query.where(ArtifactRow.project.in_(sorted(visible)))
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
            return Lineage(
                load_artifacts(session, [rows[i] for i in order], self.store),
                edges,
                runs_for_adapters(session, order),
            )

        return self.db.read(work)

    def update(
        self,
        ref: str,
        *,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        principal: str = "",
        trace_id: str = "",
    ) -> Artifact:
        """Replaces a version's tags and/or description (None: unchanged)."""
        if tags is None and description is None:
            raise InvalidArgument(
                "update_mask is empty: name the fields to replace, tags and/or "
                "description (everything else about a version is immutable)",
                field="update_mask",
            )
        if description is not None and len(description) > 10_000:
            raise InvalidArgument(
                f"description is {len(description)} characters; at most 10000",
                field="description",
            )
        for key, value in (tags or {}).items():
            if not key or len(key) > 128 or len(value) > 1024:
                raise InvalidArgument(
                    f"tag {shorten(key)!r}: keys are 1-128 characters, values at "
                    "most 1024",
                    field="tags",
                )

        def work(session: Session) -> Artifact:
            row = resolve_ref(session, ref)
            require(WRITE, row.project, f"artifact {row.name}:{row.version}")
            before: dict[str, Any] = {}
            after: dict[str, Any] = {}
            if tags is not None and dict(row.tags or {}) != dict(tags):
                before["tags"], after["tags"] = dict(row.tags or {}), dict(tags)
                row.tags = dict(tags)
            if description is not None and (row.description or "") != description:
                before["description"] = row.description or ""
                after["description"] = description
                row.description = description
            if after:
                audit(
                    session,
                    principal=principal,
                    project=row.project,
                    action="artifact.update",
                    target=row.id,
                    before=before,
                    after=after,
                    trace_id=trace_id,
                )
                session.flush()
            return self._load(session, row)

        try:
            return self.db.write(work)
        finally:
            self.aliases.invalidate()

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
            require(WRITE, row.project, f"artifact {row.name}:{row.version}")
            if bool(row.archived) != archived:
                row.archived = archived
                audit(
                    session,
                    principal=principal,
                    project=row.project,
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


def _changed_facts(
    session: Session,
    row: ArtifactRow,
    meta: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
    parents: Sequence[ParentRef],
    derived_keys: frozenset[str] = frozenset(),
) -> list[str]:
    """What a registration of identical files says that the stored version
    does not (a fact left out is no change; a different or new one is).
    Facts read from the files that the stored version predates (a newer
    registry derives more) are no change either: the files are the same."""
    changed = []
    stored_meta = dict(row.meta or {})
    keys = sorted(
        k
        for k, v in meta.items()
        if stored_meta.get(k) != v and not (k in derived_keys and k not in stored_meta)
    )
    if keys:
        changed.append(f"metadata ({', '.join(keys[:5])})")
    stored_metrics = dict(row.metrics or {})
    keys = sorted(k for k, v in metrics.items() if stored_metrics.get(k) != v)
    if keys:
        changed.append(f"metrics ({', '.join(keys[:5])})")
    stored_tags = dict(row.tags or {})
    keys = sorted(k for k, v in tags.items() if stored_tags.get(k) != v)
    if keys:
        changed.append(f"tags ({', '.join(keys[:5])})")
    edges = {
        (e.parent_id, e.relation)
        for e in session.scalars(
            select(LineageEdgeRow).where(LineageEdgeRow.child_id == row.id)
        )
    }
    for p in parents:
        parent = resolve_ref(session, p.artifact_id, field="parents")
        relation = p.relation or parent.kind.lower()
        if (parent.id, relation) not in edges:
            changed.append(f"parents ({parent.id} as {relation})")
            break
    return changed
