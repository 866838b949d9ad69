"""Jobs belong to a project and remember who submitted them.

Jobs from before auth belong to the "default" project and have no owner
(they run on the service's own account).

Revision ID: 6c2d1e3f4a82
Revises: 5b1f0c2d9a71
Create Date: 2026-12-05 08:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.common.jobqueue.migrations import table_prefix

revision: str = "6c2d1e3f4a82"
down_revision: str | None = "5b1f0c2d9a71"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    jobs = f"{table_prefix()}_jobs"
    with op.batch_alter_table(jobs) as batch:
        batch.add_column(
            sa.Column(
                "project",
                sa.String(length=64),
                server_default="default",
                nullable=False,
            )
        )
        batch.add_column(sa.Column("owner", sa.JSON(), nullable=True))


def downgrade() -> None:
    jobs = f"{table_prefix()}_jobs"
    with op.batch_alter_table(jobs) as batch:
        batch.drop_column("owner")
        batch.drop_column("project")
