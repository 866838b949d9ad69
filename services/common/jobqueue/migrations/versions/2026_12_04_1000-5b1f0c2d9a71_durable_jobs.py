"""Durable jobs for every service: idempotency keys, recorded details, traces.

Adds to a queue's jobs table: `request_id` (unique, the caller's idempotency
key) and `request_digest`, `details` (facts a runner records so a resumed
attempt continues where the last one was), `trace_context` / `run_context`
(W3C traceparents of the submitting request and of the latest attempt), and
an index for retention by end time.

Revision ID: 5b1f0c2d9a71
Revises: e783b4f570eb
Create Date: 2026-12-04 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.common.jobqueue.migrations import table_prefix

revision: str = "5b1f0c2d9a71"
down_revision: str | None = "e783b4f570eb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    jobs = f"{table_prefix()}_jobs"
    with op.batch_alter_table(jobs) as batch:
        batch.add_column(sa.Column("request_id", sa.String(length=128), nullable=True))
        batch.add_column(
            sa.Column(
                "request_digest",
                sa.String(length=64),
                server_default="",
                nullable=False,
            )
        )
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column(
                "trace_context", sa.String(length=64), server_default="", nullable=False
            )
        )
        batch.add_column(
            sa.Column(
                "run_context", sa.String(length=64), server_default="", nullable=False
            )
        )
        batch.create_index(f"ix_{jobs}_request_id", ["request_id"], unique=True)
        batch.create_index(f"ix_{jobs}_state_end_time", ["state", "end_time"])


def downgrade() -> None:
    jobs = f"{table_prefix()}_jobs"
    with op.batch_alter_table(jobs) as batch:
        batch.drop_index(f"ix_{jobs}_state_end_time")
        batch.drop_index(f"ix_{jobs}_request_id")
        for column in (
            "run_context",
            "trace_context",
            "details",
            "request_digest",
            "request_id",
        ):
            batch.drop_column(column)
