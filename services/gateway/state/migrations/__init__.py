"""Alembic environment of the gateway's own tables (not its job queue's)."""

from __future__ import annotations

from pathlib import Path

from services.common import database

SCRIPT_LOCATION = Path(__file__).resolve().parent


def upgrade_database(dsn: str, revision: str = "head") -> None:
    """Brings the gateway's tables at `dsn` up to `revision` (idempotent)."""
    database.ensure_database(dsn)
    database.upgrade_schema(SCRIPT_LOCATION, dsn, revision)
