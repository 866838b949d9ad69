"""Initial registry schema: artifacts, lineage, aliases, reports, deployments.

Revision ID: a7a230583dcb
Revises:
Create Date: 2026-11-23 09:30:16
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7a230583dcb"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=32)
NAME = sa.String(length=128)
TIME = sa.DateTime(timezone=True)


def _fk(
    column: str, table: str, ondelete: str | None = None
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        ["artifacts.id"],
        ondelete=ondelete,
        name=op.f(f"fk_{table}_{column}_artifacts"),
    )


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("create_time", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_artifacts_name_version")),
    )
    op.create_index("ix_artifacts_create_time", "artifacts", ["create_time"])
    op.create_index(
        "ix_artifacts_name_digest", "artifacts", ["name", "digest"], unique=True
    )

    op.create_table(
        "artifact_files",
        sa.Column("artifact_id", ID, nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        _fk("artifact_id", "artifact_files", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("artifact_id", "path", name=op.f("pk_artifact_files")),
    )

    op.create_table(
        "lineage_edges",
        sa.Column("parent_id", ID, nullable=False),
        sa.Column("child_id", ID, nullable=False),
        sa.Column("relation", sa.String(length=64), nullable=False),
        _fk("child_id", "lineage_edges", ondelete="CASCADE"),
        _fk("parent_id", "lineage_edges"),
        sa.PrimaryKeyConstraint(
            "parent_id", "child_id", "relation", name=op.f("pk_lineage_edges")
        ),
    )
    op.create_index("ix_lineage_edges_child_id", "lineage_edges", ["child_id"])

    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("artifact_id", ID, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
        _fk("artifact_id", "aliases"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aliases")),
        sa.UniqueConstraint("name", "alias", name=op.f("uq_aliases_name_alias")),
    )
    op.create_index("ix_aliases_artifact_id", "aliases", ["artifact_id"])

    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("from_id", ID, nullable=True),
        sa.Column("to_id", ID, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("time", TIME, nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_events")),
    )
    op.create_index("ix_alias_events_name_alias", "alias_events", ["name", "alias"])

    op.create_table(
        "validation_reports",
        sa.Column("id", ID, nullable=False),
        sa.Column("candidate_id", ID, nullable=False),
        sa.Column("baseline_id", ID, nullable=True),
        sa.Column("dataset_id", ID, nullable=True),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("create_time", TIME, nullable=False),
        _fk("baseline_id", "validation_reports"),
        _fk("candidate_id", "validation_reports"),
        _fk("dataset_id", "validation_reports"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_reports")),
    )
    op.create_index(
        "ix_validation_reports_candidate_id", "validation_reports", ["candidate_id"]
    )
    op.create_index(
        "ix_validation_reports_create_time", "validation_reports", ["create_time"]
    )

    op.create_table(
        "deployments",
        sa.Column("name", NAME, nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("adapter_id", ID, nullable=True),
        sa.Column("strategy", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("previous_model_id", ID, nullable=True),
        sa.Column("update_time", TIME, nullable=False),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _fk("adapter_id", "deployments"),
        _fk("model_id", "deployments"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_deployments")),
    )

    op.create_table(
        "deployment_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("model_id", ID, nullable=False),
        sa.Column("adapter_id", ID, nullable=True),
        sa.Column("strategy", sa.Integer(), nullable=False),
        sa.Column("previous_model_id", ID, nullable=True),
        sa.Column("updated_by", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("time", TIME, nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_events")),
        sa.UniqueConstraint(
            "name", "revision", name=op.f("uq_deployment_events_name_revision")
        ),
    )


def downgrade() -> None:
    for table in (
        "deployment_events",
        "deployments",
        "validation_reports",
        "alias_events",
        "aliases",
        "lineage_edges",
        "artifact_files",
        "artifacts",
    ):
        op.drop_table(table)  # dropping a table drops its indexes too
