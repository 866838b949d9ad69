"""Reading the audit log; entries are written by each mutation (db.audit)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.auth.caller import current_caller
from services.common.auth.denials import Denial
from services.common.auth.permissions import READ
from services.common.errors import InvalidArgument
from services.registry.db import AuditEventRow, Database, as_utc, audit
from services.registry.domain import AuditEvent
from services.registry.queries import list_scope, page_query


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(
        self,
        *,
        target: str = "",
        action: str = "",
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        size: int = 0,
        token: str = "",
    ) -> tuple[list[AuditEvent], str]:
        """Newest first; `start` inclusive, `end` exclusive."""
        if start and end and end <= start:
            raise InvalidArgument(
                f"end_time {end.isoformat()} is not after start_time "
                f"{start.isoformat()}",
                field="end_time",
            )
        query = select(AuditEventRow).order_by(AuditEventRow.id.desc())
        visible = current_caller().projects_with(READ)
        if visible is not None:
            query = query.where(AuditEventRow.project.in_(sorted(visible)))
        if target:
            query = query.where(AuditEventRow.target == target)
        if action:
            query = query.where(AuditEventRow.action == action)
        if start:
            query = query.where(AuditEventRow.time >= start)
        if end:
            query = query.where(AuditEventRow.time < end)
        scope = list_scope("audit", target, action, start, end, sorted(visible or ()))

        def work(session: Session) -> tuple[list[AuditEvent], str]:
            rows, nxt = page_query(session, query, size, token, scope)
            return [
                AuditEvent(
                    id=r.id,
                    principal=r.principal,
                    action=r.action,
                    target=r.target,
                    before=r.before,
                    after=r.after,
                    trace_id=r.trace_id,
                    time=as_utc(r.time),
                    project=r.project or "default",
                )
                for r in rows
            ], nxt

        return self.db.read(work)


def record_denial(db: Database, denial: Denial, relayed_by: str = "") -> None:
    """Writes one refused call to the audit log (action "denied:<Method>")."""
    after = {
        "code": denial.code,
        "reason": denial.reason,
        "message": denial.message[:1000],
    }
    if relayed_by:
        after["reported_by"] = relayed_by

    def work(session) -> None:
        audit(
            session,
            principal=denial.principal,
            project=denial.project,
            action=f"denied:{denial.method.rsplit('/', 1)[-1]}"[:64],
            target=denial.method,
            after=after,
            trace_id=denial.trace_id,
        )

    db.write(work)
