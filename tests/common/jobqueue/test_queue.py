"""The durable job queue on SQLite and PostgreSQL, with fast fake runners.

Each "replica" is a DurableJobEngine on the same database, as separate
service processes would be; runners stand in for the real work.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import Counter

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from opentelemetry import trace
from sqlalchemy import inspect, update

from services.common.database import utcnow
from services.common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.common.jobqueue import JobStore, job_tables, make_engine
from services.common.jobqueue.migrations import upgrade_database
from services.common.jobqueue.store import Fence
from services.common.jobs import JobState, Update
from tests.common.jobqueue.support import (
    BACKENDS,
    PREFIX,
    drop_pg_database,
    fresh_pg_database,
    pg_dsn,
    wait_for,
)


def _diff(dsn: str, prefix: str = PREFIX) -> list:
    tables = job_tables(prefix)
    engine = make_engine(dsn)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "version_table": tables.version_table,
                    "include_name": lambda name, type_, _: (
                        type_ != "table" or tables.owns(name)
                    ),
                },
            )
            return compare_metadata(context, tables.metadata)
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_head_matches_the_models_beside_other_queues(backend, tmp_path):
    """Each service's queue migrates cleanly into a database the registry and
    other queues use too, touching only its own tables."""
    from services.registry.migrations import upgrade_database as upgrade_registry

    def check(dsn: str) -> None:
        assert _diff(dsn) != []  # an empty database differs: the check can fail
        upgrade_registry(dsn)
        for prefix in ("trainer", "merger", "gateway"):
            upgrade_database(dsn, prefix)
            upgrade_database(dsn, prefix)  # idempotent
            assert _diff(dsn, prefix) == []
        engine = make_engine(dsn)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        for prefix in ("trainer", "merger", "gateway"):
            assert {
                f"{prefix}_jobs",
                f"{prefix}_job_events",
                f"{prefix}_alembic_version",
            } <= tables
        assert {"artifacts", "alembic_version"} <= tables  # the registry's, intact

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'shared.db'}")
    else:
        with fresh_pg_database() as dsn:
            check(dsn)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_queue_of_the_first_schema_upgrades_with_its_jobs(backend, tmp_path):
    """A trainer queue created before jobs became durable everywhere keeps its
    jobs: the new columns get defaults and the job still reads back."""

    def check(dsn: str) -> None:
        upgrade_database(dsn, "trainer", "e783b4f570eb")
        engine = make_engine(dsn)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO trainer_jobs (id, state, priority, spec, stage, "
                    "progress, message, trace_id, create_time, update_time, attempt, "
                    "worker_id, cancel_requested, resumed_from_step, last_sequence, "
                    "error_code, error_message) VALUES ('train-old', 'QUEUED', 0, "
                    "'{}', 'queued', 0, 'queued', '', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP, 0, '', false, 0, 0, '', '')"
                )
        finally:
            engine.dispose()
        upgrade_database(dsn, "trainer")
        assert _diff(dsn, "trainer") == []
        engine = make_engine(dsn)
        try:
            row = JobStore(engine, job_tables("trainer")).get("train-old")
        finally:
            engine.dispose()
        assert (row.state, row.request_id, row.request_digest) == ("QUEUED", None, "")

    if backend == "sqlite":
        check(f"sqlite:///{tmp_path / 'old.db'}")
    else:
        with fresh_pg_database() as dsn:
            check(dsn)


@pytest.mark.postgres
def test_upgrade_creates_a_missing_postgres_database():
    name = f"lorafleet_jobs_test_{secrets.token_hex(6)}"
    dsn = pg_dsn(name)
    try:
        upgrade_database(dsn, "merger")
        assert _diff(dsn, "merger") == []
    finally:
        drop_pg_database(name)


class Recorder:
    """A fake runner: records each run, optionally blocks until told or stopped."""

    def __init__(self, *, block: bool = False, sleep_s: float = 0.0) -> None:
        self.runs: list[tuple[str, str, int]] = []  # (job id, worker, attempt)
        self.block = block
        self.sleep_s = sleep_s
        self.release = threading.Event()
        self.started = threading.Event()
        self.running = 0
        self.most_running = 0
        self.last_exit = 0.0
        self._lock = threading.Lock()

    def __call__(self, ctx, spec):
        with self._lock:
            self.runs.append((ctx.job.id, ctx.job.worker_id, ctx.job.attempt))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            ctx.report(stage="train", progress=0.5, message="half", step=1)
            self.started.set()
            if self.sleep_s:
                time.sleep(self.sleep_s)
            while self.block and not self.release.is_set():
                ctx.check_cancelled()
                time.sleep(0.02)
            ctx.check_cancelled()
            return {"name": spec.get("name"), "attempt": ctx.job.attempt}
        finally:
            with self._lock:
                self.running -= 1
                # When the run really ended, independent of when a polling
                # test thread gets scheduled to notice.
                self.last_exit = time.monotonic()


def _states(engine, ids):
    return [engine.get(i).state for i in ids]


def test_a_restart_loses_no_queued_job(replicas):
    first = Recorder(block=True)
    a = replicas.engine(first, worker_id="trainer-a")
    ids = [a.submit({"name": f"job{i}"}).id for i in range(3)]
    assert first.started.wait(300)
    a.shutdown(0.0)  # graceful: the running job goes back to the queue
    assert _states(a, ids) == [JobState.QUEUED] * 3
    assert "requeued" in a.get(ids[0]).message

    second = Recorder()
    b = replicas.engine(second, worker_id="trainer-b")
    wait_for(lambda: all(s == JobState.SUCCEEDED for s in _states(b, ids)))
    assert sorted(j for j, _, _ in second.runs) == sorted(ids)
    resumed = b.get(ids[0])
    assert (resumed.attempt, resumed.worker_id) == (2, "trainer-b")
    assert resumed.result == {"name": "job0", "attempt": 2}
    assert b.get(ids[1]).attempt == 1


def test_priorities_then_age_decide_the_order(replicas):
    recorder = Recorder()
    idle = replicas.engine(recorder, start=False)
    submitted = [
        (idle.submit({"name": name}, priority=priority).id, name)
        for name, priority in [("low", 0), ("high", 5), ("mid", 1), ("high2", 5)]
    ]
    runner = replicas.engine(recorder)  # one worker: one job at a time
    wait_for(lambda: len(recorder.runs) == 4)
    by_id = dict(submitted)
    assert [by_id[j] for j, _, _ in recorder.runs] == ["high", "high2", "mid", "low"]
    listed, _ = runner.list(None, 10, "")
    assert [j.priority for j in listed] == [5, 1, 5, 0]  # newest first


def test_job_workers_bounds_concurrency_per_replica(replicas):
    recorder = Recorder(block=True)
    engine = replicas.engine(recorder, workers=2)
    ids = [engine.submit({"name": str(i)}).id for i in range(5)]
    wait_for(lambda: recorder.running == 2)  # both workers busy, blocked
    assert _states(engine, ids).count(JobState.RUNNING) == 2
    recorder.release.set()
    wait_for(lambda: all(s == JobState.SUCCEEDED for s in _states(engine, ids)))
    assert recorder.most_running == 2


def test_a_full_queue_is_resource_exhausted(replicas):
    engine = replicas.engine(Recorder(), queue_size=2, start=False)
    first = engine.submit({})
    engine.submit({})
    with pytest.raises(ResourceExhausted, match="queue is full .2 jobs waiting"):
        engine.submit({})
    engine.cancel(first.id)
    engine.submit({})  # a cancelled job frees its place


def test_cancel_a_queued_job_at_once(replicas):
    ended: list[str] = []
    recorder = Recorder()
    engine = replicas.engine(recorder, start=False, on_end=ended.append)
    job = engine.submit({})
    cancelled = engine.cancel(job.id)
    assert cancelled.state == JobState.CANCELLED
    assert ended == [job.id]
    engine.start()
    later = engine.submit({})  # runs once the worker went past the cancelled one
    wait_for(lambda: engine.get(later.id).state == JobState.SUCCEEDED)
    assert [j for j, _, _ in recorder.runs] == [later.id]
    assert engine.cancel(job.id).state == JobState.CANCELLED  # idempotent
    with pytest.raises(NotFound, match="no train job has id 'train-nope'"):
        engine.cancel("train-nope")


def test_cancel_reaches_a_job_running_on_another_replica(replicas):
    """The running replica's next heartbeat (every tick_s, ~0.5 s) stops it."""
    ended: list[str] = []
    recorder = Recorder(block=True)
    a = replicas.engine(recorder, worker_id="a", on_end=ended.append, heartbeat=False)
    b = replicas.engine(Recorder(), worker_id="b", start=False)
    job = a.submit({})
    assert recorder.started.wait(30)
    assert b.cancel(job.id).state == JobState.RUNNING  # asked; a stops it
    a.beat()  # one heartbeat is all it takes
    wait_for(lambda: b.get(job.id).state == JobState.CANCELLED)
    wait_for(lambda: ended == [job.id])
    messages = [e.message for e, _ in b.watch(job.id)]
    assert messages[-2:] == ["cancellation requested", "cancelled"]


@pytest.mark.parametrize("replica_count", [4])
def test_replicas_sharing_a_queue_never_run_a_job_twice(replicas, replica_count):
    recorder = Recorder()
    idle = replicas.engine(recorder, start=False)
    ids = [idle.submit({"name": str(i)}).id for i in range(80)]
    engines = [
        replicas.engine(recorder, worker_id=f"r{i}", workers=2, start=False)
        for i in range(replica_count)
    ]
    for engine in engines:
        threading.Thread(target=engine.start).start()
    wait_for(lambda: all(s == JobState.SUCCEEDED for s in _states(idle, ids)))
    counts = Counter(j for j, _, _ in recorder.runs)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert all(attempt == 1 for _, _, attempt in recorder.runs)
    assert len({worker for _, worker, _ in recorder.runs}) > 1  # work was shared


def test_a_shutdown_during_a_start_waits_for_it_and_a_later_start_does_nothing(
    replicas,
):
    """Replicas started on threads (as above) can be shut down while one is
    still starting: the shutdown must not join threads not yet started."""
    for _ in range(20):
        engine = replicas.engine(Recorder(), workers=2, start=False)
        starter = threading.Thread(target=engine.start)
        starter.start()
        engine.shutdown(0.0, stop_s=10.0)  # raised "cannot join thread" before
        starter.join(30)
        assert not any(t.is_alive() for t in engine._threads)
    late = replicas.engine(Recorder(), start=False)
    late.shutdown(0.0)
    late.start()
    assert late._threads == []


def test_an_expired_lease_is_reclaimed_by_another_replica(replicas):
    crashed = Recorder(block=True)
    a = replicas.engine(crashed, worker_id="a", lease_s=3600)
    job = a.submit({"name": "long"})
    assert crashed.started.wait(30)
    a.abandon()  # as if killed: the job stays RUNNING under a's lease
    assert a.get(job.id).state == JobState.RUNNING
    Job = replicas.tables.Job  # ... until the lease runs out (no waiting here)
    replicas.store.db.write(
        lambda s: s.execute(
            update(Job).values(lease_expires=utcnow()).where(Job.id == job.id)
        )
    )

    survivor = Recorder()
    b = replicas.engine(survivor, worker_id="b", lease_s=3600)
    wait_for(lambda: b.get(job.id).state == JobState.SUCCEEDED)
    done = b.get(job.id)
    assert (done.attempt, done.worker_id) == (2, "b")
    assert survivor.runs == [(job.id, "b", 2)]
    messages = [e.message for e, _ in b.watch(job.id)]
    assert "resumed on b (attempt 2): the lease of a expired" in messages


def test_a_restarted_replica_resumes_its_own_jobs_at_once(replicas):
    crashed = Recorder(block=True)
    a = replicas.engine(crashed, worker_id="trainer-0", lease_s=3600)
    job = a.submit({})
    assert crashed.started.wait(30)
    a.abandon()
    again = Recorder()
    replicas.engine(again, worker_id="trainer-0", lease_s=3600)  # same name
    # A lease of an hour: only taking its own job back at start explains this.
    wait_for(lambda: a.get(job.id).state == JobState.SUCCEEDED)
    assert again.runs == [(job.id, "trainer-0", 2)]


def test_a_replica_that_lost_its_lease_writes_nothing(replicas):
    store = replicas.store
    Job = replicas.tables.Job
    idle = replicas.engine(Recorder(), start=False)
    job = idle.submit({})
    claimed, _ = store.claim("slow", lease_s=30)
    old = Fence("slow", claimed.attempt)
    store.db.write(
        lambda s: s.execute(
            update(Job).values(lease_expires=utcnow()).where(Job.id == job.id)
        )
    )
    taken, how = store.claim("fast", lease_s=30)
    assert how == "resumed on fast (attempt 2): the lease of slow expired"
    assert (taken.id, taken.worker_id, taken.attempt) == (job.id, "fast", 2)
    assert not store.report(job.id, old, Update(message="stale progress"))
    assert not store.finish(job.id, old, "SUCCEEDED", "stale")
    assert store.renew({job.id: old}, 30) == {job.id}
    assert idle.get(job.id).state == JobState.RUNNING
    assert idle.get(job.id).worker_id == "fast"


def test_watch_on_another_replica_streams_every_event(replicas):
    def runner(ctx, spec):
        for step in range(1, 4):
            ctx.report(
                stage="train",
                progress=step / 4,
                message=f"step {step}/3",
                metrics={"loss": 1.0 / step, "learning_rate": 1e-3},
                step=step,
                total_steps=3,
            )
            time.sleep(0.05)
        return {"ok": True}

    a = replicas.engine(runner, worker_id="a")
    b = replicas.engine(runner, worker_id="b", start=False)
    job = a.submit({})
    seen = list(b.watch(job.id))
    events = [e for e, _ in seen]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state == JobState.SUCCEEDED
    assert seen[-1][1].result == {"ok": True}
    steps = [e for e in events if e.stage == "train"]
    assert [(e.step, e.total_steps) for e in steps] == [(1, 3), (2, 3), (3, 3)]
    assert steps[1].metrics == {"loss": 0.5, "learning_rate": 1e-3}
    later = [e.sequence for e, _ in b.watch(job.id, after_sequence=3)]
    assert later == [e.sequence for e in events[3:]]
    with pytest.raises(NotFound):
        next(b.watch("train-missing"))


def test_failures_keep_their_code_and_message(replicas):
    def runner(ctx, spec):
        if spec["kind"] == "bad":
            raise InvalidArgument("config.rank 0 is out of range")
        raise RuntimeError("boom")

    ended: list[str] = []
    engine = replicas.engine(runner, on_end=ended.append)
    bad = engine.submit({"kind": "bad"})
    crash = engine.submit({"kind": "crash"})
    wait_for(lambda: engine.get(crash.id).state.terminal)
    wait_for(lambda: engine.get(bad.id).state.terminal)
    assert (engine.get(bad.id).error_code, engine.get(bad.id).error_message) == (
        "INVALID_ARGUMENT",
        "config.rank 0 is out of range",
    )
    crashed = engine.get(crash.id)
    assert crashed.error_code == "INTERNAL"
    # The exception's text stays in the log; the caller learns where to look.
    assert "boom" not in crashed.error_message
    assert f"internal error (RuntimeError) in train job {crash.id}" in (
        crashed.error_message
    )
    assert sorted(ended) == sorted([bad.id, crash.id])


def test_finished_jobs_beyond_the_history_are_pruned(replicas):
    engine = replicas.engine(Recorder(), history=2)
    ids = [engine.submit({}).id for _ in range(4)]
    # One read: two jobs left, both done, happens only once all four ended.
    wait_for(
        lambda: (
            [j.state for j in engine.list(None, 10, "")[0]] == [JobState.SUCCEEDED] * 2
        )
    )
    listed = [j.id for j in engine.list(None, 10, "")[0]]
    assert listed == ids[:1:-1]  # the two newest, newest first
    with pytest.raises(NotFound):
        engine.get(ids[0])


def test_list_pages_and_filters(replicas):
    engine = replicas.engine(Recorder(), start=False)
    ids = [engine.submit({}).id for _ in range(5)]
    engine.cancel(ids[0])
    page, token = engine.list(None, 2, "")
    assert [j.id for j in page] == [ids[4], ids[3]]
    page2, token2 = engine.list(None, 2, token)
    assert [j.id for j in page2] == [ids[2], ids[1]]
    last, end = engine.list(None, 2, token2)
    assert ([j.id for j in last], end) == ([ids[0]], "")
    queued, _ = engine.list(JobState.QUEUED, 10, "")
    assert len(queued) == 4
    with pytest.raises(InvalidArgument, match="different listing"):
        engine.list(JobState.QUEUED, 2, token)


def test_concurrent_claims_take_each_job_once(replicas):
    """Claimants racing in lock step (a barrier) never take the same job."""
    idle = replicas.engine(Recorder(), start=False)
    ids = {idle.submit({}).id for _ in range(60)}
    claimants = 6
    barrier = threading.Barrier(claimants)
    taken: list[list[str]] = [[] for _ in range(claimants)]
    stores = [
        JobStore(make_engine(replicas.dsn), replicas.tables) for _ in range(claimants)
    ]

    errors: list[BaseException] = []

    def claim_all(i: int) -> None:
        barrier.wait()
        try:
            while (claimed := stores[i].claim(f"w{i}", lease_s=30)) is not None:
                taken[i].append(claimed[0].id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(claimants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for store in stores:
        store.engine.dispose()
    every = [job_id for claims in taken for job_id in claims]
    assert errors == []  # no claim collided with another (no retry, no conflict)
    assert sorted(every) == sorted(ids)  # each job exactly once


def test_a_diverged_run_with_nan_loss_is_recorded(replicas):
    """PostgreSQL's JSON refuses NaN; the queue still records and streams it."""

    def runner(ctx, spec):
        ctx.report(stage="train", metrics={"loss": math.nan, "grad_norm": math.inf})
        return {"metrics": {"final_loss": math.nan}}

    engine = replicas.engine(runner)
    job = engine.submit({})
    events = [e for e, _ in engine.watch(job.id)]
    assert events[-1].state == JobState.SUCCEEDED
    (train,) = [e for e in events if e.stage == "train"]
    assert math.isnan(train.metrics["loss"]) and train.metrics["grad_norm"] == math.inf
    assert engine.get(job.id).result == {"metrics": {"final_loss": "NaN"}}


class UnreachableStore(JobStore):
    """A store whose heartbeat queries fail once `down` is set."""

    down = False

    def cancel_flags(self, job_ids):
        if self.down:
            raise Unavailable("the job database is unreachable")
        return super().cancel_flags(job_ids)

    def renew(self, fences, lease_s):
        if self.down:
            raise Unavailable("the job database is unreachable")
        return super().renew(fences, lease_s)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_replica_cut_off_from_the_database_stops_its_jobs(replicas):
    """Once its lease may have lapsed, another replica may be resuming the job:
    the cut-off replica stops it (at 0.8 of a lease without renewal) rather
    than run two attempts at once. Driven by a fake clock and explicit beats."""
    store = UnreachableStore(replicas.db, replicas.tables)
    recorder = Recorder(block=True)
    clock = FakeClock()
    engine = replicas.engine(
        recorder,
        worker_id="cut-off",
        lease_s=10.0,
        store=store,
        heartbeat=False,
        clock=clock,
    )
    job = engine.submit({})
    assert recorder.started.wait(30)
    engine.beat()  # renews nothing yet (a third of a lease has not passed)
    store.down = True
    clock.now += 7.0  # 0.7 of a lease: it may still hold
    engine.beat()
    assert recorder.running == 1 and engine.running_ids() == [job.id]
    clock.now += 1.5  # 0.85 of a lease since the claim: it may have lapsed
    engine.beat()
    wait_for(lambda: recorder.running == 0)
    row = replicas.store.get(job.id)
    assert (row.state, row.worker_id) == ("RUNNING", "cut-off")  # left to its lease


def test_a_request_id_returns_the_job_it_created(replicas):
    a = replicas.engine(Recorder(), worker_id="a", start=False)
    b = replicas.engine(Recorder(), worker_id="b", start=False)
    first = a.submit({"name": "x"}, request_id="req-1", digest="d1")
    again = b.submit({"name": "x"}, request_id="req-1", digest="d1")
    assert again.id == first.id and again.request_id == "req-1"
    assert b.find("req-1", "d1").id == first.id
    assert b.find("req-2") is None
    assert replicas.store.count("QUEUED") == 1
    with pytest.raises(AlreadyExists, match="used for a different request") as err:
        a.submit({"name": "y"}, request_id="req-1", digest="d2")
    assert err.value.field == "request_id"


def test_concurrent_submits_with_one_request_id_make_one_job(replicas):
    engines = [replicas.engine(Recorder(), start=False) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    ids: list[str] = []

    def submit(engine) -> None:
        barrier.wait()
        ids.append(engine.submit({}, request_id="same", digest="d").id)

    threads = [threading.Thread(target=submit, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 4 and len(set(ids)) == 1
    assert replicas.store.count("QUEUED") == 1


def test_recorded_details_carry_over_to_the_next_attempt(replicas):
    """What a runner records survives its replica: the next attempt reads it."""
    seen: list[dict] = []
    first_attempt = threading.Event()

    def runner(ctx, spec):
        seen.append(dict(ctx.details))
        if ctx.job.attempt == 1:
            ctx.record(step="merge", merge_job_id="merge-1")
            first_attempt.set()
            while True:
                ctx.check_cancelled()
                time.sleep(0.02)
        return {"resumed_with": ctx.details["merge_job_id"]}

    a = replicas.engine(runner, worker_id="gw-0", lease_s=3600)
    job = a.submit({})
    assert first_attempt.wait(30)
    a.abandon()  # killed mid-workflow
    b = replicas.engine(runner, worker_id="gw-0", lease_s=3600)  # restarted
    wait_for(lambda: b.get(job.id).state == JobState.SUCCEEDED)
    assert seen == [{}, {"step": "merge", "merge_job_id": "merge-1"}]
    assert b.get(job.id).result == {"resumed_with": "merge-1"}


def test_a_replica_that_lost_the_job_cannot_record(replicas):
    store = replicas.store
    idle = replicas.engine(Recorder(), start=False)
    job = idle.submit({})
    claimed, _ = store.claim("old", lease_s=30)
    assert store.save_details(job.id, Fence("old", claimed.attempt), {"a": 1})
    store.requeue(job.id, Fence("old", claimed.attempt), "requeued")
    store.claim("new", lease_s=30)
    assert not store.save_details(job.id, Fence("old", claimed.attempt), {"a": 2})
    assert store.get(job.id).details == {"a": 1}


def test_reopen_queues_a_failed_job_again_with_its_details(replicas):
    calls: list[int] = []

    def runner(ctx, spec):
        calls.append(ctx.job.attempt)
        if ctx.job.attempt == 1:
            ctx.record(done=["train"])
            raise InvalidArgument("gates failed")
        return {"details": ctx.details}

    engine = replicas.engine(runner)
    job = engine.submit({})
    wait_for(lambda: engine.get(job.id).state == JobState.FAILED)
    again, reopened = engine.reopen(job.id, "resumed by request")
    assert reopened and again.state == JobState.QUEUED and again.error_code == ""
    wait_for(lambda: engine.get(job.id).state == JobState.SUCCEEDED)
    assert calls == [1, 2]
    assert engine.get(job.id).result == {"details": {"done": ["train"]}}
    _, twice = engine.reopen(job.id, "again")
    assert not twice  # a succeeded job stays as it is
    with pytest.raises(NotFound):
        engine.reopen("train-nope", "x")


def test_finished_jobs_past_their_retention_are_pruned(replicas):
    recorder = Recorder()
    engine = replicas.engine(recorder, retention_s=0.0, history=0)
    job = engine.submit({})
    wait_for(lambda: _gone(engine, job.id))
    assert [j for j, _, _ in recorder.runs] == [job.id]  # it ran, then was pruned
    engine.shutdown(0.0)  # the next job must run (and end) on the other replica
    kept = replicas.engine(Recorder(), retention_s=3600.0, history=0)
    other = kept.submit({})
    wait_for(lambda: kept.get(other.id).state == JobState.SUCCEEDED)
    assert [j.id for j in kept.list(None, 10, "")[0]] == [other.id]


def _gone(engine, job_id: str) -> bool:
    try:
        engine.get(job_id)
    except NotFound:
        return True
    return False


def test_each_attempt_continues_the_submitters_trace_and_links_the_last(
    replicas, span_exporter
):
    tracer = trace.get_tracer("test")
    started = threading.Event()

    def runner(ctx, spec):
        if ctx.job.attempt == 1:
            started.set()
            while True:
                ctx.check_cancelled()
                time.sleep(0.02)
        return {}

    with tracer.start_as_current_span("submitter") as submitter:
        a = replicas.engine(runner, worker_id="w", lease_s=3600)
        job = a.submit({})
    trace_id = submitter.get_span_context().trace_id
    assert job.trace_id == format(trace_id, "032x")
    assert started.wait(30)
    a.abandon()
    b = replicas.engine(runner, worker_id="w", lease_s=3600)
    wait_for(lambda: b.get(job.id).state == JobState.SUCCEEDED)
    spans = [
        s
        for s in span_exporter.get_finished_spans()
        if s.name == "train.job" and s.attributes.get("lorafleet.job_id") == job.id
    ]
    assert sorted(s.attributes["lorafleet.attempt"] for s in spans) == [1, 2]
    assert {s.context.trace_id for s in spans} == {trace_id}
    assert all(s.parent.span_id == submitter.get_span_context().span_id for s in spans)
    first = next(s for s in spans if s.attributes["lorafleet.attempt"] == 1)
    second = next(s for s in spans if s.attributes["lorafleet.attempt"] == 2)
    assert [link.context.span_id for link in second.links] == [first.context.span_id]


def test_resumed_from_step_is_readable_while_the_attempt_runs(replicas):
    release = threading.Event()

    def runner(ctx, spec):
        ctx.set_resumed_from_step(40)
        while not release.is_set():
            ctx.check_cancelled()
            time.sleep(0.02)
        return {}

    engine = replicas.engine(runner)
    job = engine.submit({})
    wait_for(lambda: engine.get(job.id).resumed_from_step == 40)
    assert engine.get(job.id).state == JobState.RUNNING
    release.set()
    wait_for(lambda: engine.get(job.id).state == JobState.SUCCEEDED)
    assert engine.get(job.id).resumed_from_step == 40
