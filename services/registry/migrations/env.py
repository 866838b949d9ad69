"""Alembic entry point: runs migrations on a given connection or a DSN."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text

from services.registry.db import Base, make_engine, normalize_dsn

# Arbitrary constant naming the registry's migration lock in pg_advisory_lock.
MIGRATION_LOCK_KEY = 0x6C6F7261  # "lora"

config = context.config
target_metadata = Base.metadata

if config.config_file_name:  # the alembic CLI; upgrade_database() passes none
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _dsn() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from services.common.config import load_config  # LORAFLEET_* env vars, YAML

    return normalize_dsn(load_config().effective_registry_dsn)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_dsn(),
        target_metadata=target_metadata,
        compare_type=True,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
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
