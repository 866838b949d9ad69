"""Alembic entry point of a job queue database (the prefix's own version table)."""

from __future__ import annotations

import hashlib
from logging.config import fileConfig

from alembic import context

from services.common.database import normalize_dsn, run_migration_env
from services.common.jobqueue.migrations import table_prefix
from services.common.jobqueue.tables import job_tables, make_engine

config = context.config
if config.config_file_name:  # the alembic CLI; upgrade_database() passes none
    fileConfig(config.config_file_name, disable_existing_loggers=False)

TABLES = job_tables(table_prefix())
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

    return normalize_dsn(load_config().job_dsn(TABLES.prefix))


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Only this queue's tables: a shared database may hold other services'."""
    if type_ == "table":
        return TABLES.owns(name)
    table = getattr(obj, "table", None)
    return table is None or TABLES.owns(table.name)


run_migration_env(
    context,
    lock_key=MIGRATION_LOCK_KEY,
    dsn=_dsn,
    engine_factory=make_engine,
    target_metadata=TABLES.metadata,
    version_table=TABLES.version_table,
    include_object=_include_object,
)
