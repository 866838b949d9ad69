"""Registry database schema (SQLAlchemy 2.0 typed models) and engine factory."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from services.common.auth.caller import current_caller
from services.common.database import (  # noqa: F401 (re-exported)
    NAMING_CONVENTION,
    READ_ONLY,
    Transactions,
    as_utc,
    lock_key,
    make_engine,
    normalize_dsn,
    utcnow,
)

log = logging.getLogger(__name__)

ID = String(32)  # uuid4 hex
NAME = String(128)
DIGEST = String(80)  # "sha256:" + 64 hex
UTC_TIME = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ArtifactRow(Base):
    """One immutable version of a named artifact."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        # Unique: identical content under one name is one version, enforced
        # by the database so concurrent registrations cannot both insert it.
        Index("ix_artifacts_name_digest", "name", "digest", unique=True),
        Index("ix_artifacts_create_time", "create_time"),
        Index("ix_artifacts_project", "project"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(NAME)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(DIGEST)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    create_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
    archived: Mapped[bool] = mapped_column(Boolean, server_default=false())
    # The project owning the name: set by its first version, shared by all.
    project: Mapped[str] = mapped_column(String(64), server_default="default")
    # The one free-text field UpdateArtifact may change (with tags).
    description: Mapped[str] = mapped_column(Text, server_default="")


class ArtifactFileRow(Base):
    """One file of an artifact version, as recorded at registration."""

    __tablename__ = "artifact_files"
    __table_args__ = (Index("ix_artifact_files_sha256", "sha256"),)

    artifact_id: Mapped[str] = mapped_column(
        ID, ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)


class LineageEdgeRow(Base):
    """`child_id` was derived from `parent_id`."""

    __tablename__ = "lineage_edges"
    __table_args__ = (Index("ix_lineage_edges_child_id", "child_id"),)

    parent_id: Mapped[str] = mapped_column(
        ID, ForeignKey("artifacts.id"), primary_key=True
    )
    child_id: Mapped[str] = mapped_column(
        ID, ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    relation: Mapped[str] = mapped_column(String(64), primary_key=True)


class AliasRow(Base):
    """A movable pointer from (name, alias) to one version of that name."""

    __tablename__ = "aliases"
    __table_args__ = (
        UniqueConstraint("name", "alias"),
        Index("ix_aliases_artifact_id", "artifact_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(NAME)
    alias: Mapped[str] = mapped_column(String(64))
    artifact_id: Mapped[str] = mapped_column(ID, ForeignKey("artifacts.id"))
    update_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)


class AliasEventRow(Base):
    """Append-only history of alias moves, for audit and rollback."""

    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_name_alias", "name", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(NAME)
    alias: Mapped[str] = mapped_column(String(64))
    from_id: Mapped[str | None] = mapped_column(ID)
    to_id: Mapped[str] = mapped_column(ID)
    reason: Mapped[str] = mapped_column(Text)
    time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
    trace_id: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(256), server_default="")


class AuditEventRow(Base):
    """Append-only log of every mutation, written in the mutating transaction."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_target_time", "target", "time"),
        Index("ix_audit_events_time", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    trace_id: Mapped[str] = mapped_column(String(32))
    time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
    # The project of the change (or of the refused attempt).
    project: Mapped[str] = mapped_column(String(64), server_default="default")


class ApiKeyRow(Base):
    """An API key: its name, roles per project and the SHA-256 of its secret."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    # {"project": "viewer" | "operator" | "admin"}; "*" = every project.
    roles: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(256))
    create_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
    expire_time: Mapped[dt.datetime | None] = mapped_column(UTC_TIME)
    revoke_time: Mapped[dt.datetime | None] = mapped_column(UTC_TIME)
    revoked_by: Mapped[str] = mapped_column(String(256), server_default="")


def audit(
    session: Session,
    *,
    principal: str,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    trace_id: str = "",
    project: str | None = None,
) -> None:
    """Records a mutation in its own transaction; `project` defaults to the
    project the current caller acts in."""
    if project is None:
        project = current_caller().project
    session.add(
        AuditEventRow(
            project=project[:64],
            principal=(principal or "")[:256],
            action=action,
            target=target[:256],
            before=before,
            after=after,
            trace_id=trace_id or "",
            time=utcnow(),
        )
    )


class TrainingRunRow(Base):
    """The fine-tuning run that produced an adapter: config, seed, environment."""

    __tablename__ = "training_runs"
    __table_args__ = (
        Index("ix_training_runs_base_model_id", "base_model_id"),
        Index("ix_training_runs_dataset_id", "dataset_id"),
        Index("ix_training_runs_create_time", "create_time"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    adapter_id: Mapped[str] = mapped_column(
        ID, ForeignKey("artifacts.id", ondelete="CASCADE"), unique=True
    )
    base_model_id: Mapped[str | None] = mapped_column(ID, ForeignKey("artifacts.id"))
    base_model_digest: Mapped[str] = mapped_column(DIGEST)
    dataset_id: Mapped[str | None] = mapped_column(ID, ForeignKey("artifacts.id"))
    dataset_digest: Mapped[str] = mapped_column(DIGEST)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON)
    split: Mapped[dict[str, Any]] = mapped_column(JSON)
    train_job_id: Mapped[str] = mapped_column(String(64))
    create_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)


class ValidationReportRow(Base):
    """A validation report; the full message body lives in `report`."""

    __tablename__ = "validation_reports"
    __table_args__ = (
        Index("ix_validation_reports_candidate_id", "candidate_id"),
        Index("ix_validation_reports_create_time", "create_time"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    candidate_id: Mapped[str] = mapped_column(ID, ForeignKey("artifacts.id"))
    baseline_id: Mapped[str | None] = mapped_column(ID, ForeignKey("artifacts.id"))
    dataset_id: Mapped[str | None] = mapped_column(ID, ForeignKey("artifacts.id"))
    passed: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float] = mapped_column(Float)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    create_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)


class DeploymentRow(Base):
    """The current state of a named deployment."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(NAME, primary_key=True)
    model_id: Mapped[str] = mapped_column(ID, ForeignKey("artifacts.id"))
    adapter_id: Mapped[str | None] = mapped_column(ID, ForeignKey("artifacts.id"))
    strategy: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(BigInteger)
    previous_model_id: Mapped[str | None] = mapped_column(ID)
    update_time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
    updated_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    # Every target (arm) with its weight; NULL for a deployment written before
    # targets existed, which has one: the stable model_id/adapter_id.
    targets: Mapped[list[Any] | None] = mapped_column(JSON)
    # Online quality checks the gateway applies: "json" or "" (free text),
    # and phrases that mark an answer as blocked.
    output_format: Mapped[str] = mapped_column(String(16), server_default="")
    blocked_phrases: Mapped[list[Any] | None] = mapped_column(JSON)
    # The project owning the deployment, set when it is first created.
    project: Mapped[str] = mapped_column(String(64), server_default="default")


class DeploymentEventRow(Base):
    """Append-only history of deployment revisions."""

    __tablename__ = "deployment_events"
    __table_args__ = (UniqueConstraint("name", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(NAME)
    revision: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[str] = mapped_column(ID)
    adapter_id: Mapped[str | None] = mapped_column(ID)
    strategy: Mapped[int] = mapped_column(Integer)
    previous_model_id: Mapped[str | None] = mapped_column(ID)
    updated_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    time: Mapped[dt.datetime] = mapped_column(UTC_TIME)
    trace_id: Mapped[str] = mapped_column(String(32))
    targets: Mapped[list[Any] | None] = mapped_column(JSON)


class Database(Transactions):
    """The registry's units of work (see Transactions for the retry policy).

    Unique-key conflicts are retried (concurrent registrations of one name
    race on the version number); reads see one snapshot on PostgreSQL, so an
    artifact and its aliases agree.
    """

    def __init__(self, engine: Engine, *, attempts: int = 12) -> None:
        super().__init__(
            engine,
            what="the registry database",
            attempts=attempts,
            retry_integrity=True,
            snapshot_reads=True,
        )
