"""Fixtures of the trainer queue tests: a migrated PostgreSQL job database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.common.jobqueue.migrations import upgrade_database
from tests.common.jobqueue.support import fresh_pg_database


@pytest.fixture(scope="session")
def trainer_pg_database() -> Iterator[str]:
    """One migrated trainer queue on PostgreSQL per session; tests empty it."""
    with fresh_pg_database("trainer") as dsn:
        upgrade_database(dsn, "trainer")
        yield dsn
