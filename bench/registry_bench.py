"""Registry benchmark: registrations/s, filtered search and alias resolution latency.

    python bench/registry_bench.py --dsn postgresql://postgres@127.0.0.1:5432/test \
        --versions 100000 --names 1000 --out registry_bench.json

For PostgreSQL, `--dsn` is an admin DSN: the bench creates a fresh database on
that server, migrates it, and drops it at the end. A sqlite:/// DSN is used
as-is. The bulk of the versions is loaded with batched inserts (setup, not
measured); `registrations_per_s` is measured through the real domain API
(Registry.register_artifact from uploaded blobs: manifest checks, content
inspection, version numbering under the per-name lock, audit row, commit), on
top of the preloaded rows. Search and alias resolution go through the domain
API too (no gRPC), with the in-process alias cache warm and disabled.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import secrets
import statistics
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from services.registry.db import (  # noqa: E402
    AliasRow,
    ArtifactFileRow,
    ArtifactRow,
    Database,
    LineageEdgeRow,
    make_engine,
    normalize_dsn,
)
from services.registry.domain import ArtifactKind, ParentRef  # noqa: E402
from services.registry.manifests import FileEntry, manifest_digest  # noqa: E402
from services.registry.migrations import upgrade_database  # noqa: E402
from services.registry.repository import Registry  # noqa: E402
from services.registry.store import LocalStore  # noqa: E402

TEAMS = ["cx", "ml", "search", "ads"]
ADAPTER_CONFIG = json.dumps(
    {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
).encode()


def _safetensors(payload: bytes) -> bytes:
    """`payload` as a one-tensor safetensors file (registration checks headers)."""
    header = json.dumps(
        {
            "w": {
                "dtype": "U8",
                "shape": [len(payload)],
                "data_offsets": [0, len(payload)],
            }
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + payload


@contextmanager
def bench_database(dsn: str):
    url = make_url(normalize_dsn(dsn))
    if url.get_backend_name() != "postgresql":
        yield dsn
        return
    import psycopg
    from psycopg import sql

    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"lorafleet_bench_{secrets.token_hex(5)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
            )


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def preload(db: Database, versions: int, names: int, rng: random.Random) -> str:
    """Batched inserts of `versions` adapters over `names` names, one base model."""
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    base_id = secrets.token_hex(16)
    base_sha = hashlib.sha256(b"base").hexdigest()
    base_digest = manifest_digest([FileEntry("model.safetensors", base_sha, 4)])
    rows, files, edges, aliases = [], [], [], []

    def flush() -> None:
        def work(session):
            for table, batch in (
                (ArtifactRow, rows),
                (ArtifactFileRow, files),
                (LineageEdgeRow, edges),
                (AliasRow, aliases),
            ):
                if batch:
                    session.execute(insert(table), batch)

        db.write(work)
        for batch in (rows, files, edges, aliases):
            batch.clear()

    rows.append(
        dict(
            id=base_id,
            kind="BASE_MODEL",
            name="bench-base",
            version=1,
            digest=base_digest,
            size_bytes=4,
            meta={},
            metrics={},
            tags={},
            create_time=now,
            archived=False,
        )
    )
    files.append(
        dict(
            artifact_id=base_id, path="model.safetensors", sha256=base_sha, size_bytes=4
        )
    )
    per_name = max(1, versions // names)
    count = 0
    for n in range(names):
        for v in range(1, per_name + 1):
            if count >= versions:
                break
            count += 1
            aid = secrets.token_hex(16)
            sha = hashlib.sha256(f"{n}:{v}".encode()).hexdigest()
            entry = FileEntry("adapter_model.safetensors", sha, 64)
            rows.append(
                dict(
                    id=aid,
                    kind="ADAPTER",
                    name=f"adapter-{n:05d}",
                    version=v,
                    digest=manifest_digest([entry]),
                    size_bytes=64,
                    meta={
                        "task_type": rng.choice(["chat", "instruction", "text"]),
                        "rank": 8,
                    },
                    metrics={"eval_loss": round(rng.uniform(0.2, 2.5), 4)},
                    tags={"team": rng.choice(TEAMS)},
                    create_time=now + dt.timedelta(seconds=count),
                    archived=False,
                )
            )
            files.append(
                dict(artifact_id=aid, path=entry.path, sha256=sha, size_bytes=64)
            )
            edges.append(dict(parent_id=base_id, child_id=aid, relation="base_model"))
            if v == per_name:
                aliases.append(
                    dict(
                        name=f"adapter-{n:05d}",
                        alias="production",
                        artifact_id=aid,
                        update_time=now,
                    )
                )
            if len(rows) >= 5000:
                flush()
    flush()
    return base_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--versions", type=int, default=100_000)
    parser.add_argument("--names", type=int, default=1000)
    parser.add_argument(
        "--registrations",
        type=int,
        default=0,
        help="measured registrations (default: min(2000, versions/10))",
    )
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    rng = random.Random(42)
    names = max(1, min(args.names, args.versions))
    measured = args.registrations or max(10, min(2000, args.versions // 10))

    with bench_database(args.dsn) as dsn, tempfile.TemporaryDirectory() as tmp:
        upgrade_database(dsn)
        db = Database(make_engine(dsn))
        store = LocalStore(Path(tmp) / "store")
        registry = Registry(db, store, [Path(tmp)], alias_cache_ttl_s=60)
        uncached = Registry(db, store, [Path(tmp)], alias_cache_ttl_s=0)
        try:
            t0 = time.perf_counter()
            base_id = preload(db, args.versions - measured, names, rng)
            preload_s = time.perf_counter() - t0
            if db.engine.dialect.name == "postgresql":
                # What autovacuum does shortly after a bulk load in production.
                with db.engine.connect() as conn:
                    conn.execution_options(
                        isolation_level="AUTOCOMMIT"
                    ).exec_driver_sql("ANALYZE")

            # Blobs are uploaded before the clock starts; registration is timed.
            cfg_sha = hashlib.sha256(ADAPTER_CONFIG).hexdigest()
            store.upload(cfg_sha, len(ADAPTER_CONFIG), 0, [ADAPTER_CONFIG])
            manifests = []
            for i in range(measured):
                weights = _safetensors(f"new-weights-{i}".encode())
                sha = hashlib.sha256(weights).hexdigest()
                store.upload(sha, len(weights), 0, [weights])
                manifests.append(
                    [
                        FileEntry("adapter_config.json", cfg_sha, len(ADAPTER_CONFIG)),
                        FileEntry("adapter_model.safetensors", sha, len(weights)),
                    ]
                )

            def register(i: int) -> None:
                registry.register_artifact(
                    kind=ArtifactKind.ADAPTER,
                    name=f"adapter-{rng.randrange(names):05d}",
                    files=manifests[i],
                    metrics={"eval_loss": rng.uniform(0.2, 2.5)},
                    tags={"team": rng.choice(TEAMS)},
                    parents=[ParentRef(base_id, "base_model")],
                    principal="bench",
                )

            half = measured // 2
            start = time.perf_counter()
            register_ms = timed(register, half)
            serial_s = time.perf_counter() - start
            start = time.perf_counter()
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(register, range(half, measured)))
            concurrent_s = time.perf_counter() - start

            def search_name(i: int) -> None:
                registry.list_artifacts(
                    filter=(
                        f"name = adapter-{rng.randrange(names):05d} AND eval_loss < 1.2"
                    ),
                    order_by="metrics.eval_loss asc",
                    size=20,
                )

            def search_global(i: int) -> None:
                registry.list_artifacts(
                    filter=(
                        f"kind = ADAPTER AND base_model = bench-base AND "
                        f"tags.team = {rng.choice(TEAMS)} AND eval_loss < 1.0"
                    ),
                    size=50,
                )

            def alias(reg: Registry) -> callable:
                return lambda i: reg.aliases.resolve(
                    f"adapter-{rng.randrange(names):05d}", "production"
                )

            for i in range(names):  # warm the cache for every name
                registry.aliases.resolve(f"adapter-{i:05d}", "production")
            n = args.samples
            search_ms = timed(search_name, n)
            search_global_ms = timed(search_global, max(20, n // 5))
            alias_cached_ms = timed(alias(registry), n * 10)
            alias_db_ms = timed(alias(uncached), n)
            total = uncached.db.read(
                lambda s: s.query(ArtifactRow).count()  # noqa: B023
            )
        finally:
            db.dispose()

    result = {
        "backend": make_url(normalize_dsn(args.dsn)).get_backend_name(),
        "versions": total,
        "names": names,
        "preload_s": round(preload_s, 2),
        "measured_registrations": measured,
        "registration_path": "Registry.register_artifact(files=...) domain API",
        "registrations_per_s": round(half / serial_s, 1),
        "registrations_per_s_concurrent": round((measured - half) / concurrent_s, 1),
        "registration_threads": args.threads,
        "register_p50_ms": round(statistics.median(register_ms), 3),
        "register_p95_ms": round(percentile(register_ms, 0.95), 3),
        "search_filter": "name = X AND eval_loss < 1.2, order by metrics.eval_loss",
        "search_p50_ms": round(statistics.median(search_ms), 3),
        "search_p95_ms": round(percentile(search_ms, 0.95), 3),
        "search_global_filter": (
            "kind = ADAPTER AND base_model = bench-base AND tags.team = T AND "
            "eval_loss < 1.0, newest first, page of 50"
        ),
        "search_global_p50_ms": round(statistics.median(search_global_ms), 3),
        "search_global_p95_ms": round(percentile(search_global_ms, 0.95), 3),
        "alias_p50_ms_cached": round(statistics.median(alias_cached_ms), 4),
        "alias_p95_ms_cached": round(percentile(alias_cached_ms, 0.95), 4),
        "alias_p50_ms_db": round(statistics.median(alias_db_ms), 3),
        "alias_p95_ms_db": round(percentile(alias_db_ms, 0.95), 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
