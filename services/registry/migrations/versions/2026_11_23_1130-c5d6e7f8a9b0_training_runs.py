"""Training runs as first-class records linked to the adapters they produced.

Revision ID: c5d6e7f8a9b0
Revises: b3c1d2e4f5a6
Create Date: 2026-11-23 11:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c5d6e7f8a9b0"
down_revision: str | None = "b3c1d2e4f5a6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "training_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("adapter_id", sa.String(length=32), nullable=False),
        sa.Column("base_model_id", sa.String(length=32), nullable=True),
        sa.Column("base_model_digest", sa.String(length=80), nullable=False),
        sa.Column("dataset_id", sa.String(length=32), nullable=True),
        sa.Column("dataset_digest", sa.String(length=80), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("environment", sa.JSON(), nullable=False),
        sa.Column("split", sa.JSON(), nullable=False),
        sa.Column("train_job_id", sa.String(length=64), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_id"],
            ["artifacts.id"],
            ondelete="CASCADE",
            name=op.f("fk_training_runs_adapter_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["base_model_id"],
            ["artifacts.id"],
            name=op.f("fk_training_runs_base_model_id_artifacts"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["artifacts.id"],
            name=op.f("fk_training_runs_dataset_id_artifacts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_training_runs")),
        sa.UniqueConstraint("adapter_id", name=op.f("uq_training_runs_adapter_id")),
    )
    op.create_index(
        "ix_training_runs_base_model_id", "training_runs", ["base_model_id"]
    )
    op.create_index("ix_training_runs_dataset_id", "training_runs", ["dataset_id"])
    op.create_index("ix_training_runs_create_time", "training_runs", ["create_time"])


def downgrade() -> None:
    op.drop_index("ix_training_runs_create_time", table_name="training_runs")
    op.drop_index("ix_training_runs_dataset_id", table_name="training_runs")
    op.drop_index("ix_training_runs_base_model_id", table_name="training_runs")
    op.drop_table("training_runs")
