"""Queue test support: job databases (SQLite, throwaway PostgreSQL) and replicas."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from lorafleet.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.trainer.queue.engine import Codec, PersistedJobEngine
from services.trainer.queue.models import Base, make_engine
from services.trainer.queue.store import JobStore
from services.trainer.server import create
from tests.conftest import TRAIN

ADMIN_DSN = os.environ.get(
    "LORAFLEET_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


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
def fresh_pg_database() -> Iterator[str]:
    """Creates lorafleet_trainer_test_<hex>, yields its DSN, drops it afterwards."""
    name = f"lorafleet_trainer_test_{secrets.token_hex(6)}"
    with _admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield (
            make_url(ADMIN_DSN).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        drop_pg_database(name)


def drop_pg_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def empty_tables(dsn: str) -> None:
    tables = sql.SQL(", ").join(
        sql.Identifier(t.name) for t in Base.metadata.sorted_tables
    )
    conninfo = dsn.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(tables))


class Replicas:
    """Builds trainer queue engines ("replicas") on one database; stops them all."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.db = make_engine(dsn)
        self.store = JobStore(self.db)
        self.engines: list[PersistedJobEngine] = []

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
    ) -> PersistedJobEngine:
        engine = PersistedJobEngine(
            "train",
            runner,
            JobStore(self.db),
            worker_id=worker_id or f"replica-{len(self.engines)}",
            workers=workers,
            queue_size=queue_size,
            history=history,
            lease_s=lease_s,
            poll_s=0.05,
            codec=codec,
            on_end=on_end,
            start=start,
        )
        self.engines.append(engine)
        return engine

    def close(self) -> None:
        for engine in self.engines:
            if not engine._stopping.is_set():
                engine.shutdown(0.0, stop_s=10.0)
        self.db.dispose()


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


class Replica:
    """A trainer server on the shared job database, with its own stub."""

    def __init__(self, suite, dsn: str, worker_id: str, **overrides) -> None:
        self.config = dataclasses.replace(
            suite.config,
            trainer_dsn=dsn,
            trainer_worker_id=worker_id,
            grace_period_s=0.2,
            **overrides,
        )
        self.server = create(self.config, port=0)
        self.channel = grpc.insecure_channel(self.server.address)
        self.stub = trainer_pb2_grpc.TrainerServiceStub(self.channel)
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.channel.close()
            self.server.stop(0.2)

    def job(self, job_id: str) -> trainer_pb2.TrainJob:
        return self.stub.GetTrainJob(
            trainer_pb2.GetTrainJobRequest(job_id=job_id), timeout=10
        ).job

    def start(self, base, dataset, name: str, *, steps: int, priority: int = 0):
        config = common_pb2.TrainConfig()
        config.CopyFrom(TRAIN)
        config.max_steps = steps
        config.eval_fraction = 0.0
        request = trainer_pb2.StartTrainJobRequest(
            base_model_id=base.id,
            dataset_id=dataset.id,
            adapter_name=name,
            config=config,
            priority=priority,
        )
        return self.stub.StartTrainJob(request, timeout=60).job

    def watch(self, job_id: str, after: int = 0) -> list:
        return list(
            self.stub.WatchTrainJob(
                trainer_pb2.WatchTrainJobRequest(job_id=job_id, after_sequence=after),
                timeout=300,
            )
        )
