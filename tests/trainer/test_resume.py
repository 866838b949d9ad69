"""Checkpoints and resume: an interrupted run ends with the uninterrupted adapter."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.errors import Cancelled
from services.trainer import checkpoints
from services.trainer.runner import REPO_ROOT, run_training
from tests.trainer.runs import (
    adapter_sha,
    alive,
    child_pids,
    config,
    task_for,
    train_in_process,
    wait_until,
)

CFG = dict(max_steps=32, checkpoint_steps=4)

# A trainer process: runs one task through the runner, as the job queue does.
TRAINER = """
import sys
from services.trainer.runner import TrainingTask, run_training
task = TrainingTask.from_json(open(sys.argv[1]).read())
run_training(task, lambda *e: None, lambda: False)
"""


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, demo_dataset_path, tmp_path_factory):
    """The adapter digest and outcome of the run nobody interrupts."""
    root = tmp_path_factory.mktemp("uninterrupted")
    outcome = train_in_process(
        tiny_model_dir,
        demo_dataset_path,
        root / "adapter",
        config(**CFG),
        checkpoint_dir=root / "checkpoints",
    )
    assert outcome.extra["resumed_from_step"] == 0
    return adapter_sha(root / "adapter"), outcome


def test_stopped_run_resumes_to_the_same_adapter(
    uninterrupted, tiny_model_dir, demo_dataset_path, tmp_path
):
    ckpt = tmp_path / "checkpoints"
    events: list = []
    # Stop after step 5: checkpoint-4 is on disk, step 5's work is lost.
    with pytest.raises(Cancelled):
        train_in_process(
            tiny_model_dir,
            demo_dataset_path,
            tmp_path / "adapter",
            config(**CFG),
            checkpoint_dir=ckpt,
            events=events,
            should_stop=lambda: bool(events) and events[-1][0] >= 4,
        )
    assert [p.name for p in checkpoints.checkpoints(ckpt)] == ["checkpoint-4"]
    assert not (tmp_path / "adapter").exists()
    # A kill in the middle of the next save leaves a partial folder behind.
    partial = ckpt / "checkpoint-8"
    shutil.copytree(ckpt / "checkpoint-4", partial)
    state = (partial / "trainer_state.json").read_text()
    (partial / "trainer_state.json").write_text(state[: len(state) // 2])
    assert not checkpoints.is_complete(partial)

    resumed = train_in_process(
        tiny_model_dir,
        demo_dataset_path,
        tmp_path / "adapter",
        config(**CFG),
        checkpoint_dir=ckpt,
    )
    digest, outcome = uninterrupted
    assert resumed.extra["resumed_from_step"] == 4
    assert adapter_sha(tmp_path / "adapter") == digest
    assert resumed.metrics["train_loss"] == outcome.metrics["train_loss"]
    assert resumed.metrics["train_tokens"] == outcome.metrics["train_tokens"]
    assert resumed.metrics["steps"] == 32
    assert checkpoints.latest_complete(ckpt).name == "checkpoint-32"

    # Another config in the same folder never resumes these checkpoints.
    other = train_in_process(
        tiny_model_dir,
        demo_dataset_path,
        tmp_path / "other",
        config(**{**CFG, "max_steps": 2, "seed": 4}),
        checkpoint_dir=ckpt,
    )
    assert other.extra["resumed_from_step"] == 0
    assert [p.name for p in checkpoints.checkpoints(ckpt)] == ["checkpoint-2"]


def test_killed_trainer_resumes_from_its_last_checkpoint(
    uninterrupted, tiny_model_dir, demo_dataset_path, tmp_path
):
    task = task_for(tiny_model_dir, demo_dataset_path, tmp_path, config(**CFG))
    task_file = tmp_path / "task.json"
    task_file.write_text(task.to_json())
    ckpt = Path(task.checkpoint_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with open(tmp_path / "trainer.log", "wb") as log:
        trainer = subprocess.Popen(
            [sys.executable, "-c", TRAINER, str(task_file)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_until(
            lambda: checkpoints.is_complete(ckpt / "checkpoint-4"), timeout=120
        ), (tmp_path / "trainer.log").read_text()[-3000:]
        children = child_pids(task.job_id)
        trainer.send_signal(signal.SIGKILL)  # the trainer service dies
        trainer.wait()
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait()
    assert len(children) == 1
    # The orphaned child notices and stops writing checkpoints.
    assert wait_until(lambda: not alive(children[0]), timeout=300)
    latest = checkpoints.latest_complete(ckpt)
    assert latest is not None and checkpoints.step_of(latest) < 32

    # A new trainer picks the job up again.
    outcome = run_training(task, lambda *e: None, lambda: False)
    digest, reference = uninterrupted
    assert outcome.extra["resumed_from_step"] == checkpoints.step_of(latest)
    assert adapter_sha(Path(task.out_dir)) == digest
    assert outcome.metrics["train_loss"] == reference.metrics["train_loss"]
    run_file = json.loads((ckpt / checkpoints.RUN_FILE).read_text())
    assert run_file["fingerprint"]
