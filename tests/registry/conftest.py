"""Fixtures: a real registry server on SQLite and on a throwaway PostgreSQL database."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from lorafleet.v1 import registry_pb2, registry_pb2_grpc
from services.common.config import Config, load_config
from services.registry.db import Base
from services.registry.migrations import upgrade_database
from services.registry.server import create
from tests.deadlines import stretched_channel
from tests.registry.files import safetensors_bytes

ADMIN_DSN = os.environ.get(
    "LORAFLEET_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)


def _admin_connect() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        # Deliberately a failure, not a skip: the suite must prove PostgreSQL works.
        pytest.fail(
            f"PostgreSQL at {ADMIN_DSN} is unreachable ({exc}); start it or "
            "point LORAFLEET_TEST_PG_DSN at an admin DSN",
            pytrace=False,
        )


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """Creates lorafleet_test_<hex>, yields its DSN, drops it afterwards."""
    name = f"lorafleet_test_{secrets.token_hex(6)}"
    with _admin_connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield (
            make_url(ADMIN_DSN).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with _admin_connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
            )


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One migrated database for the session; tests empty it instead of recreating.

    CREATE/DROP DATABASE cost ~0.3 s each, which would dominate the suite.
    """
    with fresh_pg_database() as dsn:
        upgrade_database(dsn)
        yield dsn


def _empty_tables(dsn: str) -> None:
    tables = sql.SQL(", ").join(
        sql.Identifier(t.name) for t in Base.metadata.sorted_tables
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables))


@pytest.fixture(params=BACKENDS)
def registry_dsn(request) -> str:
    """A registry database with no rows; "" means the default SQLite file."""
    if request.param == "sqlite":
        return ""
    dsn = request.getfixturevalue("pg_database")
    _empty_tables(dsn)  # before the test, so a failed one cannot leak rows
    return dsn


@pytest.fixture(params=BACKENDS)
def empty_dsn(request, tmp_path: Path) -> Iterator[str]:
    """A database without any schema, for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        with fresh_pg_database() as dsn:
            yield dsn


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def config(data_dir: Path, registry_dsn: str) -> Config:
    return load_config(
        env={},
        auth_mode="disabled",
        data_dir=data_dir,
        port=0,
        registry_dsn=registry_dsn,
    )


@pytest.fixture
def server(config: Config):
    running = create(config, port=0)
    yield running
    running.stop(0)


@pytest.fixture
def stub(server) -> Iterator[registry_pb2_grpc.RegistryServiceStub]:
    channel = stretched_channel(server.address)
    yield registry_pb2_grpc.RegistryServiceStub(channel)
    channel.close()


class Sources:
    """Writes small but well-formed artifacts under the data directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, name: str) -> Path:
        path = self.root / "incoming" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model(
        self,
        name: str = "model",
        weights: bytes = b"weights-v1",
        extra: dict[str, bytes] | None = None,
    ) -> Path:
        path = self._dir(name)
        (path / "config.json").write_text(
            json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
        )
        (path / "model.safetensors").write_bytes(safetensors_bytes(weights))
        (path / "tokenizer").mkdir(exist_ok=True)
        (path / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
        for rel, data in (extra or {}).items():
            (path / rel).write_bytes(data)
        return path

    def adapter(self, name: str = "adapter", weights: bytes = b"lora-a") -> Path:
        path = self._dir(name)
        (path / "adapter_config.json").write_text(
            json.dumps(
                {
                    "r": 8,
                    "lora_alpha": 16,
                    "peft_type": "LORA",
                    "target_modules": ["q_proj", "v_proj"],
                }
            )
        )
        (path / "adapter_model.safetensors").write_bytes(safetensors_bytes(weights))
        return path

    def dataset(self, name: str = "train.jsonl", rows: int = 3) -> Path:
        path = self.root / "incoming" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(rows))
        )
        return path


@pytest.fixture
def sources(data_dir: Path) -> Sources:
    return Sources(data_dir)


@pytest.fixture
def register(stub):
    """register(kind, name, path, **fields) -> RegisterArtifactResponse."""

    def _register(kind: int, name: str, path: Path | str, **fields):
        return stub.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=kind, name=name, source_path=str(path), **fields
            )
        )

    return _register


def _digest_of(root: Path) -> str:
    paths = (
        [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    )
    lines = []
    for p in paths:
        rel = p.name if root.is_file() else p.relative_to(root).as_posix()
        data = p.read_bytes()
        lines.append(f"{rel}\t{hashlib.sha256(data).hexdigest()}\t{len(data)}\n")
    return "sha256:" + hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


@pytest.fixture
def digest_of():
    """The manifest digest of a file or directory, computed without the store."""
    return _digest_of
