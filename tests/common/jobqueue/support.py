"""Job queue test support: databases (SQLite, throwaway PostgreSQL) and replicas."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from services.common.jobqueue import (
    Codec,
    DurableJobEngine,
    JobStore,
    job_tables,
    make_engine,
)

ADMIN_DSN = os.environ.get(
    "LORAFLEET_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# The queue the generic tests use; services use their own names.
PREFIX = "trainer"


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        # A failure, not a skip: the suite must prove the queue on PostgreSQL.
        pytest.fail(
            f"PostgreSQL at {ADMIN_DSN} is unreachable ({exc}); start it or "
            "point LORAFLEET_TEST_PG_DSN at an admin DSN",
            pytrace=False,
        )


@contextmanager
def fresh_pg_database(label: str = "jobs") -> Iterator[str]:
    """Creates lorafleet_<label>_test_<hex>, yields its DSN, drops it afterwards."""
    name = f"lorafleet_{label}_test_{secrets.token_hex(6)}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield pg_dsn(name)
    finally:
        drop_pg_database(name)


def pg_dsn(name: str) -> str:
    return make_url(ADMIN_DSN).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def empty_tables(dsn: str, prefix: str = PREFIX) -> None:
    tables = sql.SQL(", ").join(
        sql.Identifier(t.name) for t in job_tables(prefix).metadata.sorted_tables
    )
    conninfo = dsn.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(tables))


class Replicas:
    """Builds queue engines ("replicas") on one database; stops them all."""

    def __init__(self, dsn: str, prefix: str = PREFIX) -> None:
        self.dsn = dsn
        self.tables = job_tables(prefix)
        self.db = make_engine(dsn)
        self.store = JobStore(self.db, self.tables)
        self.engines: list[DurableJobEngine] = []

    def new_store(self) -> JobStore:
        return JobStore(self.db, self.tables)

    def engine(
        self,
        runner: Callable,
        *,
        worker_id: str = "",
        workers: int = 1,
        queue_size: int = 100,
        lease_s: float = 30.0,
        start: bool = True,
        on_end: Callable[[str], None] | None = None,
        codec: Codec | None = None,
        history: int = 1000,
        retention_s: float = 86400.0,
        store: JobStore | None = None,
        **options,
    ) -> DurableJobEngine:
        engine = DurableJobEngine(
            "train",
            runner,
            store or self.new_store(),
            worker_id=worker_id or f"replica-{len(self.engines)}",
            workers=workers,
            queue_size=queue_size,
            history=history,
            retention_s=retention_s,
            lease_s=lease_s,
            poll_s=0.05,
            codec=codec,
            on_end=on_end,
            start=start,
            **options,
        )
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            if not engine._stopping.is_set():
                engine.shutdown(0.0, stop_s=10.0)
        self.db.dispose()


def wait_for(condition: Callable[[], bool], timeout_s: float = 300.0) -> None:
    """Waits for an event; the timeout only stops a hung test, it is no bound
    (generous: a loaded 2-core machine can be 10x slower than a quiet one)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)
