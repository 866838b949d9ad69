"""Alembic environment of the trainer job database, and the programmatic upgrade."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import make_url

from services.trainer.queue.models import make_engine, normalize_dsn

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(dsn: str = "") -> AlembicConfig:
    """An Alembic config built in code, so no alembic.ini is needed at run time.

    Developers generating a migration:
    ``alembic -c services/trainer/queue/alembic.ini revision --autogenerate -m x``
    """
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if dsn:
        cfg.set_main_option("sqlalchemy.url", normalize_dsn(dsn).replace("%", "%%"))
    return cfg


def upgrade_database(dsn: str, revision: str = "head") -> None:
    """Brings the trainer schema at `dsn` up to `revision` (idempotent).

    Runs in one transaction (PostgreSQL DDL is transactional) under an advisory
    lock there, so replicas starting together do not both migrate. A missing
    PostgreSQL database is created first (the server's user must be allowed to).
    """
    ensure_database(dsn)
    engine = make_engine(dsn)
    try:
        with engine.begin() as connection:
            cfg = alembic_config(dsn)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def ensure_database(dsn: str) -> None:
    """Creates the PostgreSQL database named in `dsn` when it does not exist.

    Lets the trainer point at e.g. ``.../trainer`` on a server whose volume was
    initialised before the trainer had a database of its own.
    """
    url = make_url(normalize_dsn(dsn))
    if url.get_backend_name() != "postgresql" or not url.database:
        return
    import psycopg
    from psycopg import sql

    admin = url.set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.Error:
        return  # no maintenance database to ask: let the real connect report
    with conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)
        ).fetchone()
        if found:
            return
        try:
            conn.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database))
            )
        except psycopg.errors.DuplicateDatabase:
            pass  # another replica created it first
