"""Alembic environment of the registry database, and the programmatic upgrade."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config as AlembicConfig

from services.common import database

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(dsn: str = "") -> AlembicConfig:
    """The registry's Alembic config, built in code (no alembic.ini at run time)."""
    return database.alembic_config(SCRIPT_LOCATION, dsn)


def upgrade_database(dsn: str, revision: str = "head") -> None:
    """Brings the registry schema at `dsn` up to `revision` (idempotent)."""
    database.upgrade_schema(SCRIPT_LOCATION, dsn, revision)
