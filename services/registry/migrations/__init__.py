"""Alembic environment of the registry database, and the programmatic upgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

from services.registry.db import make_engine, normalize_dsn

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(dsn: str = "") -> AlembicConfig:
    """An Alembic config built in code, so no alembic.ini is needed at run time."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if dsn:
        cfg.set_main_option("sqlalchemy.url", normalize_dsn(dsn).replace("%", "%%"))
    return cfg


def upgrade_database(dsn: str, revision: str = "head") -> None:
    """Brings the registry schema at `dsn` up to `revision` (idempotent).

    Runs in one transaction (PostgreSQL DDL is transactional) under an advisory
    lock there, so two registries starting together do not both migrate.
    """
    engine = make_engine(dsn)
    try:
        with engine.begin() as connection:
            cfg = alembic_config(dsn)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()
