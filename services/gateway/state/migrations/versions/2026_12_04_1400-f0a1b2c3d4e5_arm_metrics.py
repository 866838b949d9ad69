"""Per-arm request metrics of deployments, per replica and time window.

Revision ID: f0a1b2c3d4e5
Revises:
Create Date: 2026-12-04 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f0a1b2c3d4e5"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_arm_metrics",
        sa.Column("deployment", sa.String(length=128), nullable=False),
        sa.Column("arm", sa.String(length=32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replica", sa.String(length=256), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("latency_buckets", sa.JSON(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("empty_outputs", sa.BigInteger(), nullable=False),
        sa.Column("invalid_json", sa.BigInteger(), nullable=False),
        sa.Column("blocked_outputs", sa.BigInteger(), nullable=False),
        sa.Column("output_chars", sa.BigInteger(), nullable=False),
        sa.Column("agreements", sa.BigInteger(), nullable=False),
        sa.Column("shadow_dropped", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "deployment",
            "arm",
            "window_start",
            "replica",
            name=op.f("pk_gateway_arm_metrics"),
        ),
    )
    op.create_index(
        "ix_gateway_arm_metrics_deployment_window",
        "gateway_arm_metrics",
        ["deployment", "window_start"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_gateway_arm_metrics_deployment_window", table_name="gateway_arm_metrics"
    )
    op.drop_table("gateway_arm_metrics")
