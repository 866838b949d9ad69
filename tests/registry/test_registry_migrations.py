"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from services.registry.db import Base, make_engine
from services.registry.migrations import alembic_config, upgrade_database

TABLES = {
    "artifacts",
    "artifact_files",
    "lineage_edges",
    "aliases",
    "alias_events",
    "validation_reports",
    "deployments",
    "deployment_events",
}


def _diff(dsn: str) -> list:
    engine = make_engine(dsn)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def _tables(dsn: str) -> set[str]:
    engine = make_engine(dsn)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_matches_the_models(empty_dsn):
    dsn = empty_dsn
    assert _diff(dsn) != []  # an empty database differs: the check can fail
    upgrade_database(dsn)
    assert _diff(dsn) == []
    assert TABLES <= _tables(dsn)
    upgrade_database(dsn)  # idempotent on an up-to-date database
    assert _diff(dsn) == []


def test_downgrade_to_base_and_back(empty_dsn):
    dsn = empty_dsn
    upgrade_database(dsn)
    command.downgrade(alembic_config(dsn), "base")
    assert not TABLES & _tables(dsn)
    upgrade_database(dsn)
    assert _diff(dsn) == []
