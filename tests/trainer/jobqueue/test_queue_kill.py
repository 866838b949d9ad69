"""A trainer process killed mid-training: its job resumes when a trainer comes back.

The first trainer is a real `python -m services.trainer` process sharing the
job database; SIGKILL gives it no chance to tell the queue anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from lorafleet.v1 import common_pb2, registry_pb2, trainer_pb2, trainer_pb2_grpc
from services.common.jobqueue import job_tables, make_engine
from tests.conftest import TRAIN
from tests.trainer.helpers import chat_row, register_dataset
from tests.trainer.jobqueue.support import Replica, wait_for

REPO = Path(__file__).resolve().parents[3]
STEPS, CHECKPOINT_STEPS = 24, 4
TrainJobEventRow = job_tables("trainer").Event


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(base, dataset, name: str) -> trainer_pb2.StartTrainJobRequest:
    config = common_pb2.TrainConfig()
    config.CopyFrom(TRAIN)
    config.max_steps = STEPS
    config.checkpoint_steps = CHECKPOINT_STEPS
    config.eval_fraction = 0.0
    return trainer_pb2.StartTrainJobRequest(
        base_model_id=base.id, dataset_id=dataset.id, adapter_name=name, config=config
    )


def _last_step(dsn: str, job_id: str) -> int:
    db = make_engine(dsn)
    try:
        with db.connect() as conn:
            return (
                conn.scalar(
                    select(func.max(TrainJobEventRow.step)).where(
                        TrainJobEventRow.job_id == job_id
                    )
                )
                or 0
            )
    finally:
        db.dispose()


def _adapter(suite, artifact_id: str) -> tuple[bytes, dict]:
    """The adapter's weights and its PEFT config with target_modules sorted.

    PEFT keeps target_modules as a set, so two processes may list them in a
    different order (hash randomisation): same adapter, other bytes.
    """
    folder = Path(
        suite.stub("registry")
        .GetArtifact(registry_pb2.GetArtifactRequest(id=artifact_id), timeout=10)
        .artifact.local_path
    )
    config = json.loads((folder / "adapter_config.json").read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return (folder / "adapter_model.safetensors").read_bytes(), config


@pytest.fixture(scope="module")
def kill_data(suite):
    rows = [chat_row(f"What is {i} + {i}?", str(2 * i)) for i in range(16)]
    return register_dataset(suite, "queue-kill", rows)


def test_a_killed_trainer_resumes_and_ends_with_the_same_adapter(
    suite, base_model, kill_data, tmp_path
):
    dsn = f"sqlite:///{tmp_path / 'trainer.db'}"
    port = _free_port()
    config = dataclasses.replace(
        suite.config, trainer_dsn=dsn, trainer_worker_id="trainer-k", port=port
    )
    env = {**os.environ, **config.as_env(), "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "trainer.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.trainer"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=120)
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        job = stub.StartTrainJob(
            _request(base_model, kill_data, "queue-killed"), timeout=60
        ).job
        job_id = job.status.job_id
        # Past the first checkpoint, well before the end.
        wait_for(lambda: _last_step(dsn, job_id) > CHECKPOINT_STEPS, timeout_s=600)
        channel.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
    killed_at = _last_step(dsn, job_id)
    assert CHECKPOINT_STEPS < killed_at < STEPS

    again = Replica(suite, dsn, "trainer-k")  # the same name: takes it back at once
    try:
        final = again.watch(job_id)[-1].job
        assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
        assert final.attempt == 2
        # Resumed from a checkpoint of the killed run, not from scratch. (Its
        # training child may outlive the trainer by a step or two: it stops on
        # its own once it sees its parent gone.)
        assert CHECKPOINT_STEPS <= final.resumed_from_step < STEPS
        assert final.resumed_from_step % CHECKPOINT_STEPS == 0
        stream = again.watch(job_id)
        messages = [r.event.message for r in stream]
        assert "trainer-k restarted; the job resumes where its last attempt was" in (
            messages
        )
        # The attempt announced its resume while running (resumed_from_step
        # is recorded just before this event; tests/common/jobqueue shows Get
        # reading it while the job still runs).
        resumed = next(
            r.event
            for r in stream
            if r.event.message.startswith("resumed from checkpoint")
        )
        assert resumed.state == common_pb2.JOB_STATE_RUNNING
        assert resumed.message == (
            f"resumed from checkpoint step {final.resumed_from_step}"
        )
        reference = again.stub.StartTrainJob(
            _request(base_model, kill_data, "queue-uninterrupted"), timeout=60
        ).job
        done = again.watch(reference.status.job_id)[-1].job
        assert done.status.state == common_pb2.JOB_STATE_SUCCEEDED, done.status.error
        assert done.attempt == 1 and done.resumed_from_step == 0
    finally:
        again.stop()
    assert _adapter(suite, final.result.adapter_id) == _adapter(
        suite, done.result.adapter_id
    )
    assert not (config.checkpoint_dir / job_id).exists()
