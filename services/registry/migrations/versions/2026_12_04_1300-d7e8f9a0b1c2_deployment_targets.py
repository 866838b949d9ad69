"""Deployments with several weighted targets (arms): canary, A/B, shadow.

Revision ID: d7e8f9a0b1c2
Revises: c5d6e7f8a9b0
Create Date: 2026-12-04 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d7e8f9a0b1c2"
down_revision: str | None = "c5d6e7f8a9b0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: a deployment written before targets existed (one stable target).
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("targets", sa.JSON(), nullable=True))
    with op.batch_alter_table("deployment_events") as batch:
        batch.add_column(sa.Column("targets", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployment_events") as batch:
        batch.drop_column("targets")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("targets")
