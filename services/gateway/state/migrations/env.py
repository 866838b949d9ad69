"""Alembic entry point of the gateway's tables (their own version table)."""

from __future__ import annotations

from alembic import context

from services.common.database import normalize_dsn, run_migration_env
from services.gateway.state.tables import TABLES, VERSION_TABLE, Base

# Names the gateway state's migration lock in pg_advisory_xact_lock.
MIGRATION_LOCK_KEY = 0x67777374  # "gwst"


def _dsn() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from services.common.config import load_config  # LORAFLEET_* env vars, YAML

    return normalize_dsn(load_config().job_dsn("gateway"))


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Only these tables: the database also holds the gateway's job queue."""
    if type_ == "table":
        return name in TABLES
    table = getattr(obj, "table", None)
    return table is None or table.name in TABLES


run_migration_env(
    context,
    lock_key=MIGRATION_LOCK_KEY,
    dsn=_dsn,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    include_object=_include_object,
)
