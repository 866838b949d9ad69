"""Projects own names, deployments and audit records; API keys.

Everything that existed before projects belongs to the "default" project.

Revision ID: f2a3b4c5d6e7
Revises: e1f2a3b4c5d6
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f2a3b4c5d6e7"
down_revision: str | None = "e1f2a3b4c5d6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROJECT_TABLES = ("artifacts", "deployments", "audit_events")


def upgrade() -> None:
    for table in _PROJECT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column(
                    "project",
                    sa.String(length=64),
                    server_default="default",
                    nullable=False,
                )
            )
    op.create_index("ix_artifacts_project", "artifacts", ["project"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=12), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=256), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "revoked_by", sa.String(length=256), server_default="", nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_artifacts_project", table_name="artifacts")
    for table in reversed(_PROJECT_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("project")
