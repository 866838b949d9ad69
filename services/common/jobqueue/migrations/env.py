"""Alembic entry point of a job queue database (the prefix's own version table)."""

from __future__ import annotations

import hashlib
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text

from services.common.jobqueue.migrations import table_prefix
from services.common.jobqueue.tables import job_tables, make_engine

config = context.config
if config.config_file_name:  # the alembic CLI; upgrade_database() passes none
    fileConfig(config.config_file_name, disable_existing_loggers=False)

TABLES = job_tables(table_prefix())
target_metadata = TABLES.metadata
# Names this queue's migration lock in pg_advisory_xact_lock.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(f"jobqueue-migrate\0{TABLES.prefix}".encode()).digest()[:8],
    "big",
    signed=True,
)


def _dsn() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from services.common.config import load_config  # LORAFLEET_* env vars, YAML
    from services.common.database import normalize_dsn

    return normalize_dsn(load_config().job_dsn(TABLES.prefix))


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Only this queue's tables: a shared database may hold other services'."""
    if type_ == "table":
        return TABLES.owns(name)
    table = getattr(obj, "table", None)
    return table is None or TABLES.owns(table.name)


def _configure(**kw) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        version_table=TABLES.version_table,
        include_object=_include_object,
        **kw,
    )


def _run(connection) -> None:
    _configure(
        connection=connection, render_as_batch=connection.dialect.name == "sqlite"
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()


def run_migrations_offline() -> None:
    _configure(url=_dsn(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_dsn())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
