"""Alembic environment of the job queues, and the programmatic upgrade.

One set of migrations serves every service's queue: the environment's
`table_prefix` (the service name) names the tables and the version table.
"""

from __future__ import annotations

from pathlib import Path

from alembic import context
from alembic.config import Config as AlembicConfig

from services.common import database

SCRIPT_LOCATION = Path(__file__).resolve().parent
PREFIX_ATTRIBUTE = "table_prefix"


def alembic_config(prefix: str, dsn: str = "") -> AlembicConfig:
    """The queue's Alembic config for the tables of `prefix`, built in code.

    Developers generating a migration:
    ``alembic -c services/common/jobqueue/alembic.ini -x prefix=trainer
    revision --autogenerate -m x`` (then make the table names use
    ``table_prefix()`` as the existing revisions do).
    """
    cfg = database.alembic_config(SCRIPT_LOCATION, dsn)
    cfg.attributes[PREFIX_ATTRIBUTE] = prefix
    return cfg


def table_prefix() -> str:
    """The prefix of the queue being migrated (for the revision scripts)."""
    config = context.config
    prefix = config.attributes.get(PREFIX_ATTRIBUTE)
    if not prefix:
        prefix = context.get_x_argument(as_dictionary=True).get("prefix", "")
    if not prefix:
        raise RuntimeError(
            "no job table prefix: pass -x prefix=<service> to the alembic CLI"
        )
    return prefix


def upgrade_database(dsn: str, prefix: str, revision: str = "head") -> None:
    """Brings the queue schema of `prefix` at `dsn` up to `revision` (idempotent).

    A missing PostgreSQL database is created first (the server's user must be
    allowed to), so each service can get a database of its own on a shared
    server.
    """
    database.ensure_database(dsn)
    database.upgrade_schema(
        SCRIPT_LOCATION, dsn, revision, attributes={PREFIX_ATTRIBUTE: prefix}
    )
