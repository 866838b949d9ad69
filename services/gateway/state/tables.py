"""The gateway's own state beside its job queues: per-arm request metrics,
and the rollouts' controls (which rollout holds a deployment, operator
commands waiting for its controller).

Each gateway replica writes only its own rows (one per deployment, arm and
time window), replacing them as its in-memory totals grow, so replicas never
contend; readers sum over replicas and windows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    MetaData,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.database import NAMING_CONVENTION

VERSION_TABLE = "gateway_state_alembic_version"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class ArmMetricsRow(Base):
    """What one replica saw of one arm of one deployment in one time window."""

    __tablename__ = "gateway_arm_metrics"
    __table_args__ = (
        Index("ix_gateway_arm_metrics_deployment_window", "deployment", "window_start"),
    )

    deployment: Mapped[str] = mapped_column(String(128), primary_key=True)
    arm: Mapped[str] = mapped_column(String(32), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), primary_key=True
    )
    replica: Mapped[str] = mapped_column(String(256), primary_key=True)
    shadow: Mapped[bool] = mapped_column(Boolean)
    requests: Mapped[int] = mapped_column(BigInteger)
    # Failed requests by gRPC status code name.
    errors: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Successful requests per latency bucket (services.gateway.metrics).
    latency_buckets: Mapped[list[Any]] = mapped_column(JSON)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    empty_outputs: Mapped[int] = mapped_column(BigInteger)
    invalid_json: Mapped[int] = mapped_column(BigInteger)
    blocked_outputs: Mapped[int] = mapped_column(BigInteger)
    output_chars: Mapped[int] = mapped_column(BigInteger)
    agreements: Mapped[int] = mapped_column(BigInteger)
    shadow_dropped: Mapped[int] = mapped_column(BigInteger)


class RolloutRow(Base):
    """One rollout: the deployment it holds while it runs, and the operator's
    latest command. Its progress lives in its job (the `rollout` queue)."""

    __tablename__ = "gateway_rollouts"
    __table_args__ = (
        Index("ix_gateway_rollouts_deployment_created", "deployment", "create_time"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    deployment: Mapped[str] = mapped_column(String(128))
    # The deployment's name while the rollout runs, NULL once it ended: the
    # unique constraint allows one running rollout per deployment.
    active_deployment: Mapped[str | None] = mapped_column(String(128), unique=True)
    create_time: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # "promote", "abort" or "conclude", until the controller carries it out.
    command: Mapped[str | None] = mapped_column(String(16))
    command_reason: Mapped[str] = mapped_column(String(1024), default="")
    # Bumped on every change, so a controller notices a pause and resume too.
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


TABLES = tuple(Base.metadata.tables)
