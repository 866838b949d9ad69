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
    "audit_events",
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


def test_upgrade_from_first_revision_keeps_rows(empty_dsn):
    """Rows written under the initial schema survive the audit/archive migration."""
    from sqlalchemy import text

    dsn = empty_dsn
    upgrade_database(dsn, "a7a230583dcb")
    engine = make_engine(dsn)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO artifacts (id, kind, name, version, digest, "
                    "size_bytes, metadata, metrics, tags, create_time) VALUES "
                    "('a1', 'DATASET', 'd', 1, 'sha256:x', 1, '{}', '{}', '{}', "
                    "'2026-01-01 00:00:00+00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO alias_events (name, alias, from_id, to_id, reason, "
                    "time, trace_id) VALUES ('d', 'prod', NULL, 'a1', '', "
                    "'2026-01-01 00:00:00+00:00', '')"
                )
            )
        upgrade_database(dsn)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT archived FROM artifacts")).scalar() in (
                False,
                0,
            )
            assert conn.execute(text("SELECT actor FROM alias_events")).scalar() == ""
    finally:
        engine.dispose()
    assert _diff(dsn) == []
