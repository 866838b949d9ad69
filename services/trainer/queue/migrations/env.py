"""Alembic entry point of the trainer job database (its own version table)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text

from services.trainer.queue.models import (
    VERSION_TABLE,
    Base,
    make_engine,
    normalize_dsn,
)

# Arbitrary constant naming the trainer's migration lock in pg_advisory_lock.
MIGRATION_LOCK_KEY = 0x74726E72  # "trnr"

config = context.config
target_metadata = Base.metadata

if config.config_file_name:  # the alembic CLI; upgrade_database() passes none
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _dsn() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from services.common.config import load_config  # LORAFLEET_* env vars, YAML

    return normalize_dsn(load_config().effective_trainer_dsn)


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Only the trainer's tables: a shared database may hold other services'."""
    if type_ == "table":
        return name.startswith("trainer_")
    table = getattr(obj, "table", None)
    return table is None or table.name.startswith("trainer_")


def _configure(**kw) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        version_table=VERSION_TABLE,
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
