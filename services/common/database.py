"""SQLAlchemy engines and Alembic upgrades shared by every service that owns a database.

Each service keeps its own tables and migrations (the registry's, the trainer
queue's); what is the same for all of them lives here: psycopg 3 URLs, SQLite
tuned for several writer threads, UTC timestamps, and the programmatic upgrade.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.common.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Execution option asking for a read-only (deferred) SQLite transaction.
READ_ONLY = "lorafleet_read_only"

# Deterministic constraint names, so migrations can drop and alter them by name
# on every backend (SQLite batch mode needs them). Every service's schema uses it.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock.
RETRY_SQLSTATES = {"40001", "40P01"}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def normalize_dsn(dsn: str) -> str:
    """Points plain PostgreSQL URLs at psycopg 3 (SQLAlchemy defaults to psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql+psycopg://" + dsn[len(prefix) :]
    return dsn


def make_engine(
    dsn: str,
    *,
    busy_timeout_s: float = 30.0,
    pool_size: int = 10,
    max_overflow: int = 20,
    pre_ping: bool = False,
) -> Engine:
    """One Engine per process; sessions are per call, so it is shared by threads.

    SQLite gets WAL (readers never block the writer), a busy timeout, foreign
    keys, and BEGIN IMMEDIATE for writing transactions: a deferred transaction
    that later upgrades to a write lock fails with "database is locked" at once
    instead of waiting, and with one writer at a time a read-then-update (a
    queue claim) cannot interleave with another process's. Connections opened
    with the READ_ONLY execution option begin deferred. `pre_ping` costs a
    round trip per checkout (it dominated the registry's alias resolution, which
    retries once on a dead connection instead); pool_recycle bounds age anyway.
    """
    url = make_url(normalize_dsn(dsn))
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=1800,
            pool_pre_ping=pre_ping,
        )
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": busy_timeout_s}
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control away from the driver; "begin" below issues it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def alembic_config(script_location: Path, dsn: str = "") -> AlembicConfig:
    """An Alembic config built in code, so no alembic.ini is needed at run time."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(script_location))
    if dsn:
        cfg.set_main_option("sqlalchemy.url", normalize_dsn(dsn).replace("%", "%%"))
    return cfg


def upgrade_schema(
    script_location: Path,
    dsn: str,
    revision: str = "head",
    attributes: dict[str, Any] | None = None,
) -> None:
    """Brings the schema of one service's migrations at `dsn` up to `revision`.

    Runs in one transaction (PostgreSQL DDL is transactional) under the
    migration env's advisory lock there, so replicas starting together do not
    both migrate.
    """
    engine = make_engine(dsn)
    try:
        with engine.begin() as connection:
            cfg = alembic_config(script_location, dsn)
            cfg.attributes.update(attributes or {})
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def run_migration_env(
    context: Any,
    *,
    lock_key: int,
    dsn: Callable[[], str],
    engine_factory: Callable[[str], Engine] = make_engine,
    **configure: Any,
) -> None:
    """The body of every service's Alembic env.py (online and offline).

    Runs on the connection `upgrade_schema` passes in, or on its own engine
    for the alembic CLI; on PostgreSQL under a transaction-scoped advisory
    lock (`lock_key`), so replicas starting together do not both migrate.
    `configure` goes to `context.configure` (target_metadata, version_table,
    include_object, ...); `compare_type` is always on.
    """
    configure = {"compare_type": True, **configure}

    def run(connection) -> None:
        context.configure(
            connection=connection,
            render_as_batch=connection.dialect.name == "sqlite",
            **configure,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key}
                )
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(
            url=dsn(),
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            **configure,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = engine_factory(dsn())
    try:
        with engine.begin() as conn:
            run(conn)
    finally:
        engine.dispose()


def ensure_database(dsn: str) -> None:
    """Creates the PostgreSQL database named in `dsn` when it does not exist.

    Lets a service point at e.g. ``.../trainer`` on a server whose volume was
    initialised before that service had a database of its own.
    """
    url = make_url(normalize_dsn(dsn))
    if url.get_backend_name() != "postgresql" or not url.database:
        return
    import psycopg
    from psycopg import sql

    admin = url.set(drivername="postgresql", database="postgres")
    conninfo = admin.render_as_string(hide_password=False)
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.Error:
        return  # no maintenance database to ask: let the real connect report
    with conn:
        found = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (url.database,)
        ).fetchone()
        if found:
            return
        try:
            conn.execute(
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database))
            )
        except psycopg.errors.DuplicateDatabase:
            pass  # another replica created it first


def lock_key(session: Session, scope: str, key: str = "") -> None:
    """Serialises transactions touching one (scope, key) until commit.

    PostgreSQL only (a transaction-scoped advisory lock); SQLite needs nothing,
    BEGIN IMMEDIATE already serialises its writers. Unique constraints stay the
    real guarantee where there are any; the lock spares the retries.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{scope}\0{key}".encode()).digest()
    session.execute(
        text("SELECT pg_advisory_xact_lock(:key)"),
        {"key": int.from_bytes(digest[:8], "big", signed=True)},
    )


def _lost_race(exc: DBAPIError, integrity: bool) -> bool:
    """A conflict that re-running the unit of work from scratch resolves."""
    if isinstance(exc, IntegrityError):
        return integrity  # lost an insert race; the retry re-reads and decides
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate in RETRY_SQLSTATES or "database is locked" in str(exc.orig)


class Transactions:
    """Runs units of work, each in its own session and transaction, with retries.

    The one retry policy of every service database (registry, job queues):
    a unit of work that loses a race (deadlock, serialization failure, SQLite
    busy and, with `retry_integrity`, a unique-key conflict) is re-run from
    scratch, so it must decide from what it reads inside the transaction; a
    connection found dead is re-opened once (nothing was committed on it). A
    database that stays busy or unreachable is UNAVAILABLE naming `what`.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        what: str,
        attempts: int = 12,
        retry_integrity: bool = False,
        snapshot_reads: bool = False,
    ) -> None:
        self.engine = engine
        self.what = what
        self.attempts = attempts
        self._integrity = retry_integrity
        self._writer = sessionmaker(engine, expire_on_commit=False)
        options: dict[str, Any] = {READ_ONLY: True}
        if snapshot_reads and engine.dialect.name == "postgresql":
            # One snapshot per read, so related rows read in one unit agree.
            options["isolation_level"] = "REPEATABLE READ"
        self._reader = sessionmaker(
            engine.execution_options(**options), expire_on_commit=False
        )

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def read(self, work: Callable[[Session], T]) -> T:
        return self._run(self._reader, work)

    def write(self, work: Callable[[Session], T]) -> T:
        return self._run(self._writer, work)

    def _run(self, factory: sessionmaker, work: Callable[[Session], T]) -> T:
        reconnected = False
        for attempt in range(1, self.attempts + 1):
            try:
                with factory() as session, session.begin():
                    return work(session)
            except DBAPIError as exc:
                if exc.connection_invalidated and not reconnected:
                    reconnected = True
                    log.info("%s: connection was lost; reconnecting", self.what)
                    continue  # nothing was committed on a dead connection
                if _lost_race(exc, self._integrity) and attempt < self.attempts:
                    log.debug(
                        "%s: attempt %d lost a race (%s); retrying",
                        self.what,
                        attempt,
                        type(exc.orig).__name__,
                    )
                    time.sleep(random.uniform(0, min(1.0, 0.005 * 2**attempt)))
                    continue
                if isinstance(exc, OperationalError):
                    raise Unavailable(
                        f"{self.what} is busy or unreachable "
                        f"({type(exc.orig).__name__}); retry shortly"
                    ) from exc
                raise
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()
