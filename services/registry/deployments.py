"""Deployments: named endpoints and the model versions they route traffic to."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.errors import Aborted, FailedPrecondition, NotFound, shorten
from services.registry.db import (
    Database,
    DeploymentEventRow,
    DeploymentRow,
    as_utc,
    audit,
    utcnow,
)
from services.registry.domain import (
    MODEL_KINDS,
    ArtifactKind,
    Deployment,
    check_name,
)
from services.registry.queries import list_scope, page_query, resolve_ref


def _to_domain(row: DeploymentRow) -> Deployment:
    return Deployment(
        name=row.name,
        model_id=row.model_id,
        adapter_id=row.adapter_id or "",
        strategy=row.strategy,
        revision=row.revision,
        previous_model_id=row.previous_model_id or "",
        update_time=as_utc(row.update_time),
        updated_by=row.updated_by,
        reason=row.reason,
    )


class Deployments:
    """Versioned deployment records with optimistic concurrency on `revision`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self,
        *,
        name: str,
        model_id: str,
        adapter_id: str = "",
        strategy: int,
        expected_revision: int | None = None,
        reason: str = "",
        updated_by: str = "",
        trace_id: str = "",
    ) -> Deployment:
        """Creates or moves a deployment, bumping its revision by one.

        `previous_model_id` changes only when the model does, so it always names
        the version to roll back to, even after strategy-only or adapter edits.
        """
        check_name(name, what="deployment name")

        def work(session: Session) -> Deployment:
            model = resolve_ref(session, model_id, field="model_id")
            if ArtifactKind(model.kind) not in MODEL_KINDS:
                raise FailedPrecondition(
                    f"model_id {shorten(model_id)!r} is {model.name}:{model.version}, "
                    f"a {model.kind}; a deployment serves a BASE_MODEL or MERGED_MODEL "
                    "(put an adapter in adapter_id)",
                    field="model_id",
                )
            adapter = None
            if adapter_id:
                adapter = resolve_ref(session, adapter_id, field="adapter_id")
                if adapter.kind != ArtifactKind.ADAPTER.value:
                    raise FailedPrecondition(
                        f"adapter_id {shorten(adapter_id)!r} is {adapter.name}:"
                        f"{adapter.version}, a {adapter.kind}, not an ADAPTER",
                        field="adapter_id",
                    )
            current = session.scalar(
                select(DeploymentRow)
                .where(DeploymentRow.name == name)
                .with_for_update()
            )
            revision = current.revision if current else 0
            before = (
                {
                    "revision": current.revision,
                    "model_id": current.model_id,
                    "adapter_id": current.adapter_id or "",
                    "strategy": current.strategy,
                }
                if current
                else None
            )
            if expected_revision is not None and expected_revision != revision:
                state = f"at revision {revision}" if current else "does not exist"
                raise Aborted(
                    f"deployment {name!r} {state}, not revision {expected_revision} as "
                    "expected; re-read it and retry",
                    field="expected_revision",
                )
            now = utcnow()
            if current is None:
                current = DeploymentRow(name=name, previous_model_id=None)
                session.add(current)
            elif current.model_id != model.id:
                current.previous_model_id = current.model_id
            current.model_id = model.id
            current.adapter_id = adapter.id if adapter else None
            current.strategy = strategy
            current.revision = revision + 1
            current.update_time = now
            current.updated_by = updated_by[:256]
            current.reason = reason
            session.add(
                DeploymentEventRow(
                    name=name,
                    revision=current.revision,
                    model_id=model.id,
                    adapter_id=current.adapter_id,
                    strategy=strategy,
                    previous_model_id=current.previous_model_id,
                    updated_by=current.updated_by,
                    reason=reason,
                    time=now,
                    trace_id=trace_id,
                )
            )
            audit(
                session,
                principal=updated_by,
                action="deployment.put",
                target=name,
                before=before,
                after={
                    "revision": current.revision,
                    "model_id": model.id,
                    "adapter_id": current.adapter_id or "",
                    "strategy": strategy,
                    "reason": reason,
                },
                trace_id=trace_id,
            )
            session.flush()
            return _to_domain(current)

        return self.db.write(work)

    def get(self, name: str) -> Deployment:
        def work(session: Session) -> Deployment:
            row = session.get(DeploymentRow, name) if name else None
            if row is None:
                raise NotFound(
                    f"no deployment is named {shorten(name)!r}", field="name"
                )
            return _to_domain(row)

        return self.db.read(work)

    def list(self, *, size: int = 0, token: str = "") -> tuple[list[Deployment], str]:
        """Ordered by name, so pages stay stable while revisions change."""

        def work(session: Session) -> tuple[list[Deployment], str]:
            rows, nxt = page_query(
                session,
                select(DeploymentRow).order_by(DeploymentRow.name),
                size,
                token,
                list_scope("deployments"),
            )
            return [_to_domain(r) for r in rows], nxt

        return self.db.read(work)
