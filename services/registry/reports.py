"""Validation reports: the evidence a promotion decision is based on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.convert import json_safe
from services.common.errors import NotFound, shorten
from services.registry.db import (
    Database,
    ValidationReportRow,
    as_utc,
    audit,
    utcnow,
)
from services.registry.domain import ValidationReport
from services.registry.queries import list_scope, new_id, page_query, resolve_ref


def _to_domain(row: ValidationReportRow) -> ValidationReport:
    return ValidationReport(
        id=row.id,
        candidate_id=row.candidate_id,
        baseline_id=row.baseline_id or "",
        dataset_id=row.dataset_id or "",
        passed=row.passed,
        score=row.score,
        body=dict(row.report or {}),
        create_time=as_utc(row.create_time),
    )


class ValidationReports:
    """Stores reports against registered artifacts; reports are immutable."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self,
        *,
        candidate_id: str,
        baseline_id: str = "",
        dataset_id: str = "",
        passed: bool,
        score: float,
        body: dict[str, Any],
        principal: str = "",
        trace_id: str = "",
    ) -> ValidationReport:
        """Saves a new report under a fresh id (any id in `body` is ignored).

        Artifact references may be ids or "name:version"/"name@alias"; the
        report keeps the ids they resolved to, so it never drifts with an alias.
        """

        def work(session: Session) -> ValidationReport:
            candidate = resolve_ref(session, candidate_id, field="candidate_id")
            baseline = (
                resolve_ref(session, baseline_id, field="baseline_id")
                if baseline_id
                else None
            )
            dataset = (
                resolve_ref(session, dataset_id, field="dataset_id")
                if dataset_id
                else None
            )
            row = ValidationReportRow(
                id=new_id(),
                candidate_id=candidate.id,
                baseline_id=baseline.id if baseline else None,
                dataset_id=dataset.id if dataset else None,
                passed=bool(passed),
                score=float(score),
                report=json_safe(body),
                create_time=utcnow(),
            )
            session.add(row)
            audit(
                session,
                principal=principal,
                action="report.record",
                target=candidate.id,
                after={"report_id": row.id, "passed": row.passed, "score": row.score},
                trace_id=trace_id,
            )
            session.flush()
            return _to_domain(row)

        return self.db.write(work)

    def get(self, report_id: str) -> ValidationReport:
        def work(session: Session) -> ValidationReport:
            row = session.get(ValidationReportRow, report_id) if report_id else None
            if row is None:
                raise NotFound(
                    f"no validation report has id {shorten(report_id)!r}", field="id"
                )
            return _to_domain(row)

        return self.db.read(work)

    def list(
        self, *, candidate_id: str = "", size: int = 0, token: str = ""
    ) -> tuple[list[ValidationReport], str]:
        """Newest first, optionally only the reports of one candidate."""

        def work(session: Session) -> tuple[list[ValidationReport], str]:
            query = select(ValidationReportRow).order_by(
                ValidationReportRow.create_time.desc(), ValidationReportRow.id
            )
            if candidate_id:
                try:
                    wanted = resolve_ref(session, candidate_id, field="candidate_id").id
                except NotFound:
                    return [], ""  # nothing was recorded against an unknown artifact
                query = query.where(ValidationReportRow.candidate_id == wanted)
            rows, nxt = page_query(
                session, query, size, token, list_scope("reports", candidate_id)
            )
            return [_to_domain(r) for r in rows], nxt

        return self.db.read(work)
