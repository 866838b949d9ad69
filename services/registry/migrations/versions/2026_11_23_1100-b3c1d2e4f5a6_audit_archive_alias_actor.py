"""Audit log, archived versions, alias move actors, blob lookup index.

Revision ID: b3c1d2e4f5a6
Revises: a7a230583dcb
Create Date: 2026-11-23 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3c1d2e4f5a6"
down_revision: str | None = "a7a230583dcb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(
            sa.Column(
                "archived", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
    with op.batch_alter_table("alias_events") as batch:
        batch.add_column(
            sa.Column("actor", sa.String(length=256), server_default="", nullable=False)
        )
    op.create_index("ix_artifact_files_sha256", "artifact_files", ["sha256"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("principal", sa.String(length=256), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_target_time", "audit_events", ["target", "time"])
    op.create_index("ix_audit_events_time", "audit_events", ["time"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_time", table_name="audit_events")
    op.drop_index("ix_audit_events_target_time", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_artifact_files_sha256", table_name="artifact_files")
    with op.batch_alter_table("alias_events") as batch:
        batch.drop_column("actor")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("archived")
