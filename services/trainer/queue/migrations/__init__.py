"""Alembic environment of the trainer job database, and the programmatic upgrade."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config as AlembicConfig

from services.common import database

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(dsn: str = "") -> AlembicConfig:
    """The trainer queue's Alembic config, built in code.

    Developers generating a migration:
    ``alembic -c services/trainer/queue/alembic.ini revision --autogenerate -m x``
    """
    return database.alembic_config(SCRIPT_LOCATION, dsn)


def upgrade_database(dsn: str, revision: str = "head") -> None:
    """Brings the trainer schema at `dsn` up to `revision` (idempotent).

    A missing PostgreSQL database is created first (the server's user must be
    allowed to), so the trainer can get a database of its own on a shared server.
    """
    database.ensure_database(dsn)
    database.upgrade_schema(SCRIPT_LOCATION, dsn, revision)
