"""Aliases: named pointers at versions, moved compare-and-set style, with history."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.auth.caller import require
from services.common.auth.permissions import WRITE
from services.common.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    shorten,
)
from services.registry.db import (
    AliasEventRow,
    AliasRow,
    ArtifactRow,
    Database,
    as_utc,
    audit,
    utcnow,
)
from services.registry.domain import (
    AliasEvent,
    AliasMove,
    Artifact,
    check_alias,
    check_name,
)
from services.registry.queries import (
    list_scope,
    load_artifacts,
    page_query,
    resolve_ref,
)
from services.registry.store import ArtifactStore

# (request field, advice) of the archived-target refusal of SetAlias / Rollback.
_SET_ARCHIVED = ("allow_archived", "set allow_archived")
_ROLLBACK_ARCHIVED = ("to_artifact_id", "use SetAlias with allow_archived")


class Aliases:
    """Sets, rolls back, resolves and lists the moves of aliases.

    Every move is one transaction that also records an AliasEvent and an audit
    entry; resolutions are cached for `cache_ttl_s` and dropped on every local
    move (see AliasCache).
    """

    def __init__(
        self, db: Database, store: ArtifactStore, *, cache_ttl_s: float = 1.0
    ) -> None:
        self.db = db
        self.store = store
        self.cache = AliasCache(cache_ttl_s)

    def _load(self, session: Session, row: ArtifactRow) -> Artifact:
        return load_artifacts(session, [row], self.store)[0]

    def invalidate(self) -> None:
        """Forgets cached resolutions (an artifact changed, e.g. was archived)."""
        self.cache.invalidate()

    def set(
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
            return self._move(
                session,
                _current(session, target.name, alias),
                target,
                alias,
                expected_artifact_id=expected_artifact_id,
                reason=reason,
                trace_id=trace_id,
                actor=actor,
                action="alias.set",
                refuse_archived=None if allow_archived else _SET_ARCHIVED,
            )

        try:
            return self.db.write(work)
        finally:
            self.cache.invalidate()

    def rollback(
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
        """Moves an existing alias back to where it pointed before its latest move.

        Rollback only moves an alias that exists: it never creates one (that
        is SetAlias). With `to_artifact_id` the target is any version of the
        same name, but, as for SetAlias, not an archived one: archived versions
        receive no new aliases (SetAliasRequest.allow_archived is the explicit
        way). Without it, the alias returns to the version it pointed at
        before, archived or not, since that only restores an earlier state.
        """
        check_name(name)
        check_alias(alias)

        def work(session: Session) -> AliasMove:
            current = _current(session, name, alias)
            if current is None:
                raise NotFound(
                    f"artifact name {name!r} has no alias {alias!r}; rollback only "
                    "moves an existing alias (create it with SetAlias)",
                    field="alias",
                )
            if to_artifact_id:
                target = _explicit_target(session, name, to_artifact_id)
                refuse: tuple[str, str] | None = _ROLLBACK_ARCHIVED
            else:
                target = _previous_target(session, name, alias, current)
                refuse = None  # going back restores an earlier state
            return self._move(
                session,
                current,
                target,
                alias,
                expected_artifact_id=expected_artifact_id,
                reason=reason,
                trace_id=trace_id,
                actor=actor,
                action="alias.rollback",
                refuse_archived=refuse,
            )

        try:
            return self.db.write(work)
        finally:
            self.cache.invalidate()

    def _move(
        self,
        session: Session,
        current: AliasRow | None,
        target: ArtifactRow,
        alias: str,
        *,
        expected_artifact_id: str | None,
        reason: str,
        trace_id: str,
        actor: str,
        action: str,
        refuse_archived: tuple[str, str] | None,
    ) -> AliasMove:
        """Points the alias at `target`, recording the move; a no-op if it is there.

        `refuse_archived` (request field, advice), when set, refuses an
        archived target with FAILED_PRECONDITION; None allows archived targets.
        """
        require(WRITE, target.project, f"alias {target.name}@{alias}")
        previous = current.artifact_id if current else ""
        if expected_artifact_id is not None and expected_artifact_id != previous:
            where = f"points at {previous}" if previous else "does not exist"
            raise Aborted(
                f"alias {target.name}@{alias} {where}, not "
                f"{shorten(expected_artifact_id) or 'nothing'} as expected; re-read "
                "it and retry",
                field="expected_artifact_id",
            )
        if previous != target.id:
            if target.archived and refuse_archived:
                field, remedy = refuse_archived
                raise FailedPrecondition(
                    f"{target.name}:{target.version} is archived, and archived "
                    "versions receive no new aliases; unarchive it with "
                    f"ArchiveArtifact or {remedy} to point an alias at it anyway",
                    field=field,
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
                project=target.project,
                action=action,
                target=f"{target.name}@{alias}",
                before={"artifact_id": previous} if previous else None,
                after={"artifact_id": target.id, "reason": reason},
                trace_id=trace_id,
            )
            session.flush()
        return AliasMove(self._load(session, target), previous)

    def history(
        self, name: str, alias: str, *, size: int = 0, token: str = ""
    ) -> tuple[list[AliasEvent], str]:
        """The moves of one alias, newest first."""
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

    def resolve(self, name: str, alias: str) -> Artifact:
        check_name(name)
        check_alias(alias)
        return self.resolve_cached(name, alias, field="alias")

    def resolve_cached(self, name: str, alias: str, *, field: str) -> Artifact:
        """The artifact `name@alias` points at; NOT_FOUND names `field`."""
        key = (name, alias)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        generation = self.cache.generation
        artifact = self.db.read(
            lambda s: self._load(s, resolve_ref(s, f"{name}@{alias}", field=field))
        )
        self.cache.put(key, artifact, generation)
        return artifact


def _current(session: Session, name: str, alias: str) -> AliasRow | None:
    """The alias row, locked until commit so concurrent moves serialise."""
    return session.scalar(
        select(AliasRow)
        .where(AliasRow.name == name, AliasRow.alias == alias)
        .with_for_update()
    )


def _explicit_target(session: Session, name: str, ref: str) -> ArtifactRow:
    target = resolve_ref(session, ref, field="to_artifact_id")
    if target.name != name:
        raise InvalidArgument(
            f"to_artifact_id {shorten(ref)!r} is a version of {target.name!r}, "
            f"not {name!r}",
            field="to_artifact_id",
        )
    return target


def _previous_target(
    session: Session, name: str, alias: str, current: AliasRow
) -> ArtifactRow:
    """Where the alias pointed before the move that brought it to its version."""
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
    return target


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
