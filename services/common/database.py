"""SQLAlchemy engines and Alembic upgrades shared by every service that owns a database.

Each service keeps its own tables and migrations (the registry's, the trainer
queue's); what is the same for all of them lives here: psycopg 3 URLs, SQLite
tuned for several writer threads, UTC timestamps, and the programmatic upgrade.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

# Execution option asking for a read-only (deferred) SQLite transaction.
READ_ONLY = "lorafleet_read_only"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def normalize_dsn(dsn: str) -> str:
    """Points plain PostgreSQL URLs at psycopg 3 (SQLAlchemy defaults to psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


def make_engine(
    dsn: str,
    *,
    busy_timeout_s: float = 30.0,
    pool_size: int = 10,
    max_overflow: int = 20,
    pre_ping: bool = False,
) -> Engine:
    """One Engine per process; sessions are per call, so it is shared by threads.

    SQLite gets WAL (readers never block the writer), a busy timeout, foreign
    keys, and BEGIN IMMEDIATE for writing transactions: a deferred transaction
    that later upgrades to a write lock fails with "database is locked" at once
    instead of waiting, and with one writer at a time a read-then-update (a
    queue claim) cannot interleave with another process's. Connections opened
    with the READ_ONLY execution option begin deferred. `pre_ping` costs a
    round trip per checkout (it dominated the registry's alias resolution, which
    retries once on a dead connection instead); pool_recycle bounds age anyway.
    """
    url = make_url(normalize_dsn(dsn))
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=1800,
            pool_pre_ping=pre_ping,
        )
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control away from the driver; "begin" below issues it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def alembic_config(script_location: Path, dsn: str = "") -> AlembicConfig:
    """An Alembic config built in code, so no alembic.ini is needed at run time."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(script_location))
    if dsn:
        cfg.set_main_option("sqlalchemy.url", normalize_dsn(dsn).replace("%", "%%"))
    return cfg


def upgrade_schema(script_location: Path, dsn: str, revision: str = "head") -> None:
    """Brings the schema of one service's migrations at `dsn` up to `revision`.

    Runs in one transaction (PostgreSQL DDL is transactional) under the
    migration env's advisory lock there, so replicas starting together do not
    both migrate.
    """
    engine = make_engine(dsn)
    try:
        with engine.begin() as connection:
            cfg = alembic_config(script_location, dsn)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def ensure_database(dsn: str) -> None:
    """Creates the PostgreSQL database named in `dsn` when it does not exist.

    Lets a service point at e.g. ``.../trainer`` on a server whose volume was
    initialised before that service had a database of its own.
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
