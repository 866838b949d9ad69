"""Trainer job queue: jobs (claims, leases, results) and their progress events.

Revision ID: e783b4f570eb
Revises:
Create Date: 2026-11-23 12:00:50
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e783b4f570eb"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_ID = sa.String(length=64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trainer_jobs",
        sa.Column("id", JOB_ID, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("create_time", TIME, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
        sa.Column("start_time", TIME, nullable=True),
        sa.Column("end_time", TIME, nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=256), nullable=False),
        sa.Column("lease_expires", TIME, nullable=True),
        sa.Column(
            "cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("resumed_from_step", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error_code", sa.String(length=32), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trainer_jobs")),
    )
    op.create_index("ix_trainer_jobs_create_time", "trainer_jobs", ["create_time"])
    op.create_index(
        "ix_trainer_jobs_state_priority",
        "trainer_jobs",
        ["state", "priority", "create_time"],
    )
    op.create_index("ix_trainer_jobs_worker_id", "trainer_jobs", ["worker_id"])

    op.create_table(
        "trainer_job_events",
        sa.Column("job_id", JOB_ID, nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("time", TIME, nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("total_steps", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["trainer_jobs.id"],
            name=op.f("fk_trainer_job_events_job_id_trainer_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "job_id", "sequence", name=op.f("pk_trainer_job_events")
        ),
    )


def downgrade() -> None:
    op.drop_table("trainer_job_events")
    op.drop_index("ix_trainer_jobs_worker_id", table_name="trainer_jobs")
    op.drop_index("ix_trainer_jobs_state_priority", table_name="trainer_jobs")
    op.drop_index("ix_trainer_jobs_create_time", table_name="trainer_jobs")
    op.drop_table("trainer_jobs")
