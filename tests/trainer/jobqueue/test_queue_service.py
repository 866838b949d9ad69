"""The persisted queue behind TrainerService: real gRPC, a tiny model, real training.

Trainer "replicas" are extra trainer servers created next to the in-process
suite, each on its own port, sharing one job database (SQLite or PostgreSQL).
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from lorafleet.v1 import common_pb2, registry_pb2, trainer_pb2
from services.common.database import utcnow
from services.common.jobqueue import job_tables, make_engine
from tests.common.jobqueue.support import empty_tables
from tests.trainer.helpers import chat_row, register_dataset
from tests.trainer.jobqueue.support import Replica, wait_for

TrainJobRow = job_tables("trainer").Job

TRAIN_METRICS = {"loss", "learning_rate", "epoch", "elapsed_s", "tokens_per_s", "eta_s"}


@pytest.fixture(scope="module")
def queue_data(suite):
    rows = [chat_row(f"What is {i} + {i}?", str(2 * i)) for i in range(16)]
    return register_dataset(suite, "queue", rows)


@pytest.fixture
def replicas(suite):
    started: list[Replica] = []

    def make(dsn: str, worker_id: str, **overrides) -> Replica:
        replica = Replica(suite, dsn, worker_id, **overrides)
        started.append(replica)
        return replica

    yield make
    for replica in started:
        replica.stop()


def _state(job) -> int:
    return job.status.state


def _adapters_of(suite, job_id: str) -> list:
    return list(
        suite.stub("registry")
        .ListArtifacts(
            registry_pb2.ListArtifactsRequest(
                kind=common_pb2.ARTIFACT_KIND_ADAPTER,
                filter=f'metadata.train_job_id = "{job_id}"',
            ),
            timeout=10,
        )
        .artifacts
    )


def test_a_train_job_streams_metrics_and_queue_facts(
    suite, base_model, queue_data, replicas, tmp_path
):
    trainer = replicas(f"sqlite:///{tmp_path / 'trainer.db'}", "trainer-solo")
    job = trainer.start(base_model, queue_data, "queue-e2e", steps=3, priority=2)
    assert job.request.priority == 2
    stream = trainer.watch(job.status.job_id)
    final = stream[-1].job
    assert _state(final) == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    assert (final.attempt, final.worker_id, final.resumed_from_step) == (
        1,
        "trainer-solo",
        0,
    )
    events = [r.event for r in stream]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    steps = [e for e in events if e.stage == "train"]
    assert sorted({e.step for e in steps}) == [1, 2, 3]
    assert {e.total_steps for e in steps} == {3}
    per_step = [e for e in steps if "loss" in e.metrics]
    assert len(per_step) == 3
    assert all(TRAIN_METRICS <= set(e.metrics) for e in per_step), per_step[-1]
    adapters = _adapters_of(suite, job.status.job_id)
    assert [a.id for a in adapters] == [final.result.adapter_id]
    assert not (trainer.config.checkpoint_dir / job.status.job_id).exists()
    listed = trainer.stub.ListTrainJobs(trainer_pb2.ListTrainJobsRequest(), timeout=10)
    assert [j.status.job_id for j in listed.jobs] == [job.status.job_id]
    assert listed.jobs[0].request.priority == 2


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("pg", marks=pytest.mark.postgres)]
)
def test_restart_keeps_queued_jobs_and_replicas_share_them(
    suite, base_model, queue_data, replicas, tmp_path, backend, request
):
    if backend == "sqlite":
        dsn = f"sqlite:///{tmp_path / 'trainer.db'}"
    else:
        dsn = request.getfixturevalue("trainer_pg_database")
        empty_tables(dsn)
    first = replicas(dsn, "trainer-a")
    long = first.start(base_model, queue_data, "queue-long", steps=100000)
    long_id = long.status.job_id
    wait_for(
        lambda: first.job(long_id).status.stage == "train", timeout_s=300
    )  # training, so the next job waits in the queue
    # Named per backend: the same training gives byte-identical adapters, and
    # the registry returns the existing version for identical content.
    short = first.start(
        base_model, queue_data, f"queue-short-{backend}", steps=2, priority=5
    )
    short_id = short.status.job_id
    assert _state(short) == common_pb2.JOB_STATE_QUEUED
    first.stop()  # graceful: the running job is put back in the queue

    b = replicas(dsn, "trainer-b")
    c = replicas(dsn, "trainer-c")
    through_b, through_c = b.watch(short_id), c.watch(short_id)
    assert [r.event for r in through_b] == [r.event for r in through_c]
    done = through_c[-1].job
    assert _state(done) == common_pb2.JOB_STATE_SUCCEEDED, done.status.error
    assert done.attempt == 1 and done.worker_id in ("trainer-b", "trainer-c")
    assert len(_adapters_of(suite, short_id)) == 1

    # The long job resumed on one replica (attempt 2); cancel it via the other.
    wait_for(lambda: resumed_and_training(b.job(long_id)), timeout_s=300)
    runner = b.job(long_id).worker_id
    other = c if runner == "trainer-b" else b
    other.stub.CancelTrainJob(
        trainer_pb2.CancelTrainJobRequest(job_id=long_id), timeout=10
    )
    wait_for(lambda: _state(other.job(long_id)) == common_pb2.JOB_STATE_CANCELLED)
    messages = [r.event.message for r in other.watch(long_id)]
    assert any("requeued: trainer-a is shutting down" in m for m in messages)
    assert any(m.startswith(f"resumed on {runner} (attempt 2)") for m in messages)
    assert messages[-1] == "cancelled"
    assert _adapters_of(suite, long_id) == []


def resumed_and_training(job) -> bool:
    return (
        _state(job) == common_pb2.JOB_STATE_RUNNING
        and job.attempt == 2
        and job.status.stage == "train"
    )


def test_a_retry_finds_the_adapter_an_earlier_attempt_registered(
    suite, base_model, queue_data, replicas, tmp_path
):
    dsn = f"sqlite:///{tmp_path / 'trainer.db'}"
    trainer = replicas(dsn, "trainer-r", trainer_lease_s=30.0)
    job_id = trainer.start(base_model, queue_data, "queue-retry", steps=2).status.job_id
    first = trainer.watch(job_id)[-1].job
    assert _state(first) == common_pb2.JOB_STATE_SUCCEEDED, first.status.error
    # As if the trainer died after registering, before marking the job done:
    # RUNNING, no result, lease expired, its checkpoints still on disk.
    checkpoints = trainer.config.checkpoint_dir / job_id
    checkpoints.mkdir(parents=True)
    (checkpoints / "marker").write_text("left by the killed attempt")
    db = make_engine(dsn)
    with db.begin() as conn:
        conn.execute(
            update(TrainJobRow)
            .where(TrainJobRow.id == job_id)
            .values(
                state="RUNNING",
                result=None,
                end_time=None,
                lease_expires=utcnow(),
                worker_id="trainer-dead",
            )
        )
    db.dispose()
    wait_for(
        lambda: _state(trainer.job(job_id)) == common_pb2.JOB_STATE_SUCCEEDED,
        timeout_s=300,
    )
    again = trainer.job(job_id)
    assert again.attempt == 2
    assert again.result.adapter_id == first.result.adapter_id
    assert [a.id for a in _adapters_of(suite, job_id)] == [first.result.adapter_id]
    messages = [r.event.message for r in trainer.watch(job_id)]
    assert any("registered by an earlier attempt" in m for m in messages)
    assert not checkpoints.exists()
