"""Retention of old versions and garbage collection of unreferenced blobs."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.common.auth.caller import require
from services.common.auth.permissions import ADMIN
from services.common.errors import InvalidArgument
from services.registry.db import (
    AliasRow,
    ArtifactFileRow,
    ArtifactRow,
    Database,
    DeploymentRow,
    LineageEdgeRow,
    ValidationReportRow,
    audit,
    lock_key,
)
from services.registry.domain import Retention, check_name
from services.registry.store import ArtifactStore, GcResult

DEFAULT_GC_MIN_AGE_S = 3600


class Maintenance:
    def __init__(self, db: Database, store: ArtifactStore) -> None:
        self.db = db
        self.store = store

    def apply_retention(
        self,
        name: str,
        keep_last: int,
        *,
        dry_run: bool = False,
        principal: str = "",
        trace_id: str = "",
    ) -> Retention:
        """Deletes versions beyond the newest `keep_last` of `name`.

        Never deleted: a version an alias points at, one a deployment serves
        (model, adapter or rollback target), or the parent of any version, so
        lineage stays complete. Reports about a deleted version go with it;
        reports that used it as baseline or dataset keep their other facts.
        Bytes stay in the store until collect_garbage.
        """
        check_name(name)
        if keep_last < 1:
            raise InvalidArgument(
                f"keep_last must be at least 1, got {keep_last}", field="keep_last"
            )

        def work(session: Session) -> Retention:
            lock_key(session, "artifact-name", name)
            rows = session.scalars(
                select(ArtifactRow)
                .where(ArtifactRow.name == name)
                .order_by(ArtifactRow.version.desc())
            ).all()
            if rows:
                require(ADMIN, rows[0].project, f"retention of {name!r}")
            old = rows[keep_last:]
            ids = [r.id for r in old]
            if not ids:
                return Retention([], [])
            protected = set(
                session.scalars(
                    select(AliasRow.artifact_id).where(AliasRow.artifact_id.in_(ids))
                )
            )
            for column in (
                DeploymentRow.model_id,
                DeploymentRow.adapter_id,
                DeploymentRow.previous_model_id,
            ):
                protected.update(session.scalars(select(column).where(column.in_(ids))))
            protected.update(
                session.scalars(
                    select(LineageEdgeRow.parent_id).where(
                        LineageEdgeRow.parent_id.in_(ids)
                    )
                )
            )
            doomed = [r for r in old if r.id not in protected]
            kept = [r.id for r in old if r.id in protected]
            if dry_run or not doomed:
                return Retention([r.id for r in doomed], kept)
            doomed_ids = [r.id for r in doomed]
            session.execute(
                delete(ValidationReportRow).where(
                    ValidationReportRow.candidate_id.in_(doomed_ids)
                )
            )
            for column in (
                ValidationReportRow.baseline_id,
                ValidationReportRow.dataset_id,
            ):
                session.execute(
                    update(ValidationReportRow)
                    .where(column.in_(doomed_ids))
                    .values({column.key: None})
                )
            session.execute(
                delete(LineageEdgeRow).where(LineageEdgeRow.child_id.in_(doomed_ids))
            )
            session.execute(
                delete(ArtifactFileRow).where(
                    ArtifactFileRow.artifact_id.in_(doomed_ids)
                )
            )
            for r in doomed:
                audit(
                    session,
                    principal=principal,
                    action="artifact.delete",
                    target=r.id,
                    before={"name": r.name, "version": r.version, "digest": r.digest},
                    after={"reason": f"retention keep_last={keep_last}"},
                    trace_id=trace_id,
                )
            session.execute(delete(ArtifactRow).where(ArtifactRow.id.in_(doomed_ids)))
            return Retention(doomed_ids, kept)

        return self.db.write(work)

    def collect_garbage(
        self,
        *,
        min_age_s: float = DEFAULT_GC_MIN_AGE_S,
        dry_run: bool = False,
        principal: str = "",
        trace_id: str = "",
    ) -> GcResult:
        """Deletes blobs and version directories no recorded version uses.

        Registration stores (or touches) bytes before it commits its rows, so
        `min_age_s` keeps what a registration in flight is about to reference.
        """
        if min_age_s < 0:
            raise InvalidArgument(
                f"min_age_seconds must be >= 0, got {min_age_s}",
                field="min_age_seconds",
            )

        def referenced(session: Session) -> tuple[set[str], set[str]]:
            blobs = set(session.scalars(select(ArtifactFileRow.sha256).distinct()))
            digests = set(session.scalars(select(ArtifactRow.digest).distinct()))
            return blobs, digests

        blobs, digests = self.db.read(referenced)
        result = self.store.collect_garbage(
            blobs, digests, min_age_s=min_age_s, dry_run=dry_run
        )
        if not dry_run and (result.deleted_blobs or result.deleted_version_dirs):

            def record(session: Session) -> None:
                audit(
                    session,
                    principal=principal,
                    action="store.gc",
                    target="store",
                    after={
                        "deleted_blobs": result.deleted_blobs,
                        "deleted_bytes": result.deleted_bytes,
                        "deleted_version_dirs": result.deleted_version_dirs,
                    },
                    trace_id=trace_id,
                )

            self.db.write(record)
        return result
