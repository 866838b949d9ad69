"""Rollouts: the deployment each running rollout holds, operator commands.

Revision ID: a7b8c9d0e1f2
Revises: f0a1b2c3d4e5
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7b8c9d0e1f2"
down_revision: str | None = "f0a1b2c3d4e5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_rollouts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("active_deployment", sa.String(length=128), nullable=True),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("command", sa.String(length=16), nullable=True),
        sa.Column("command_reason", sa.String(length=1024), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_rollouts")),
        sa.UniqueConstraint(
            "active_deployment", name=op.f("uq_gateway_rollouts_active_deployment")
        ),
    )
    op.create_index(
        "ix_gateway_rollouts_deployment_created",
        "gateway_rollouts",
        ["deployment", "create_time"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_gateway_rollouts_deployment_created", table_name="gateway_rollouts"
    )
    op.drop_table("gateway_rollouts")
