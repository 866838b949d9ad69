"""Job queue: jobs (claims, leases, results) and their progress events.

The tables are named after the service whose queue this is (the migration
environment's `table_prefix`): trainer_jobs, merger_jobs, ...

Revision ID: e783b4f570eb
Revises:
Create Date: 2026-11-23 12:00:50
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.common.jobqueue.migrations import table_prefix

revision: str = "e783b4f570eb"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JOB_ID = sa.String(length=64)
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    prefix = table_prefix()
    jobs, events = f"{prefix}_jobs", f"{prefix}_job_events"
    op.create_table(
        jobs,
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
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{jobs}")),
    )
    op.create_index(f"ix_{jobs}_create_time", jobs, ["create_time"])
    op.create_index(
        f"ix_{jobs}_state_priority", jobs, ["state", "priority", "create_time"]
    )
    op.create_index(f"ix_{jobs}_worker_id", jobs, ["worker_id"])

    op.create_table(
        events,
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
            [f"{jobs}.id"],
            name=op.f(f"fk_{events}_job_id_{jobs}"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "sequence", name=op.f(f"pk_{events}")),
    )


def downgrade() -> None:
    prefix = table_prefix()
    jobs, events = f"{prefix}_jobs", f"{prefix}_job_events"
    op.drop_table(events)
    op.drop_index(f"ix_{jobs}_worker_id", table_name=jobs)
    op.drop_index(f"ix_{jobs}_state_priority", table_name=jobs)
    op.drop_index(f"ix_{jobs}_create_time", table_name=jobs)
    op.drop_table(jobs)
