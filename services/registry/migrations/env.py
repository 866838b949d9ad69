"""Alembic entry point: runs migrations on a given connection or a DSN."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from services.common.database import normalize_dsn, run_migration_env
from services.registry.db import Base

# Arbitrary constant naming the registry's migration lock in pg_advisory_lock.
MIGRATION_LOCK_KEY = 0x6C6F7261  # "lora"

config = context.config
if config.config_file_name:  # the alembic CLI; upgrade_database() passes none
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _dsn() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from services.common.config import load_config  # LORAFLEET_* env vars, YAML

    return normalize_dsn(load_config().effective_registry_dsn)


run_migration_env(
    context,
    lock_key=MIGRATION_LOCK_KEY,
    dsn=_dsn,
    target_metadata=Base.metadata,
)
