"""Deployments: named endpoints and the model versions they route traffic to."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.auth.caller import current_caller, require
from services.common.auth.permissions import DEPLOY, READ
from services.common.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    shorten,
)
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
from services.registry.targets import (
    Target,
    check_quality_settings,
    check_targets,
    single,
    stable_of,
)


def _targets_of(row: DeploymentRow) -> list[Target]:
    if row.targets:
        return [Target.of(t) for t in row.targets]
    return single(row.model_id, row.adapter_id or "")  # written before targets


def _facts(row: DeploymentRow) -> dict:
    """What the audit log records of a deployment's state."""
    return {
        "revision": row.revision,
        "model_id": row.model_id,
        "adapter_id": row.adapter_id or "",
        "strategy": row.strategy,
        "targets": [t.as_dict() for t in _targets_of(row)],
    }


def _resolve(session: Session, target: Target, prefix: str) -> Target:
    """The target with its ids resolved and the serving artifact's digest.

    `prefix` names the request field ("targets[1].", or "" for a single
    model_id/adapter_id), so errors point at what the caller wrote.
    """
    model = resolve_ref(session, target.model_id, field=f"{prefix}model_id")
    if ArtifactKind(model.kind) not in MODEL_KINDS:
        raise FailedPrecondition(
            f"{prefix}model_id {shorten(target.model_id)!r} is {model.name}:"
            f"{model.version}, a {model.kind}; a deployment serves a BASE_MODEL or "
            "MERGED_MODEL (put an adapter in adapter_id)",
            field=f"{prefix}model_id",
        )
    digest = model.digest
    adapter_id = ""
    if target.adapter_id:
        adapter = resolve_ref(session, target.adapter_id, field=f"{prefix}adapter_id")
        if adapter.kind != ArtifactKind.ADAPTER.value:
            raise FailedPrecondition(
                f"{prefix}adapter_id {shorten(target.adapter_id)!r} is "
                f"{adapter.name}:{adapter.version}, a {adapter.kind}, not an ADAPTER",
                field=f"{prefix}adapter_id",
            )
        base_digest = (adapter.meta or {}).get("base_model_digest", "")
        if base_digest and base_digest != model.digest:
            raise FailedPrecondition(
                f"{prefix}adapter_id {adapter.name}:{adapter.version} was trained "
                f"on another base (digest {base_digest}) than {model.name}:"
                f"{model.version} ({model.digest}); deploy it on its own base",
                field=f"{prefix}adapter_id",
            )
        adapter_id, digest = adapter.id, adapter.digest
    return Target(
        model_id=model.id,
        adapter_id=adapter_id,
        weight_bps=target.weight_bps,
        arm=target.arm,
        role=target.role,
        mirror_bps=target.mirror_bps,
        digest=digest,
    )


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
        targets=_targets_of(row),
        output_format=row.output_format or "",
        project=row.project or "default",
        blocked_phrases=list(row.blocked_phrases or []),
    )


class Deployments:
    """Versioned deployment records with optimistic concurrency on `revision`."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self,
        *,
        name: str,
        model_id: str = "",
        adapter_id: str = "",
        targets: list[Target] | None = None,
        output_format: str = "",
        blocked_phrases: list[str] | None = None,
        strategy: int,
        expected_revision: int | None = None,
        reason: str = "",
        updated_by: str = "",
        trace_id: str = "",
    ) -> Deployment:
        """Creates or moves a deployment, bumping its revision by one.

        Either one version (`model_id`, `adapter_id`: a single STABLE target
        taking all traffic) or weighted `targets`. `previous_model_id`
        changes only when the stable model does, so it always names the
        version to roll back to, even after weight-only or adapter edits.
        """
        check_name(name, what="deployment name")
        if targets and (model_id or adapter_id):
            raise InvalidArgument(
                "give targets or model_id/adapter_id, not both", field="targets"
            )
        legacy = not targets
        wanted = single(model_id, adapter_id) if legacy else list(targets)
        if not legacy:
            check_targets(wanted)
        phrases = check_quality_settings(output_format, blocked_phrases or [])

        def work(session: Session) -> Deployment:
            resolved = [
                _resolve(session, t, "" if legacy else f"targets[{i}].")
                for i, t in enumerate(wanted)
            ]
            stable = stable_of(resolved)
            current = session.scalar(
                select(DeploymentRow)
                .where(DeploymentRow.name == name)
                .with_for_update()
            )
            caller = current_caller()
            if current is not None:
                caller.require(DEPLOY, current.project, f"deployment {name!r}")
            revision = current.revision if current else 0
            before = _facts(current) if current else None
            if expected_revision is not None and expected_revision != revision:
                state = f"at revision {revision}" if current else "does not exist"
                raise Aborted(
                    f"deployment {name!r} {state}, not revision {expected_revision} as "
                    "expected; re-read it and retry",
                    field="expected_revision",
                )
            now = utcnow()
            if current is None:
                current = DeploymentRow(
                    name=name, previous_model_id=None, project=caller.project
                )
                session.add(current)
            elif current.model_id != stable.model_id:
                current.previous_model_id = current.model_id
            current.model_id = stable.model_id
            current.adapter_id = stable.adapter_id or None
            current.targets = [t.as_dict() for t in resolved]
            current.output_format = output_format
            current.blocked_phrases = phrases
            current.strategy = strategy
            current.revision = revision + 1
            current.update_time = now
            current.updated_by = updated_by[:256]
            current.reason = reason
            session.add(
                DeploymentEventRow(
                    name=name,
                    revision=current.revision,
                    model_id=current.model_id,
                    adapter_id=current.adapter_id,
                    strategy=strategy,
                    previous_model_id=current.previous_model_id,
                    updated_by=current.updated_by,
                    reason=reason,
                    time=now,
                    trace_id=trace_id,
                    targets=current.targets,
                )
            )
            audit(
                session,
                principal=updated_by,
                project=current.project,
                action="deployment.put",
                target=name,
                before=before,
                after={**_facts(current), "reason": reason},
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
            require(READ, row.project, f"deployment {name!r}")
            return _to_domain(row)

        return self.db.read(work)

    def list(self, *, size: int = 0, token: str = "") -> tuple[list[Deployment], str]:
        """Ordered by name, so pages stay stable while revisions change."""

        def work(session: Session) -> tuple[list[Deployment], str]:
            query = select(DeploymentRow).order_by(DeploymentRow.name)
            visible = current_caller().projects_with(READ)
            if visible is not None:
                query = query.where(DeploymentRow.project.in_(sorted(visible)))
            rows, nxt = page_query(
                session,
                query,
                size,
                token,
                list_scope("deployments", sorted(visible or ())),
            )
            return [_to_domain(r) for r in rows], nxt

        return self.db.read(work)
