"""Fixtures of the queue tests: job databases and replicas on them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.common.jobqueue.migrations import upgrade_database
from tests.common.jobqueue.support import (
    BACKENDS,
    PREFIX,
    Replicas,
    empty_tables,
    fresh_pg_database,
)


@pytest.fixture(scope="session")
def queue_pg_database() -> Iterator[str]:
    """One migrated PostgreSQL database per session; tests empty it first."""
    with fresh_pg_database() as dsn:
        upgrade_database(dsn, PREFIX)
        yield dsn


@pytest.fixture(params=BACKENDS)
def queue_dsn(request, tmp_path) -> str:
    """A migrated, empty job database on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
        upgrade_database(dsn, PREFIX)
        return dsn
    dsn = request.getfixturevalue("queue_pg_database")
    empty_tables(dsn)
    return dsn


@pytest.fixture
def replicas(queue_dsn) -> Iterator[Replicas]:
    group = Replicas(queue_dsn)
    yield group
    group.close()
