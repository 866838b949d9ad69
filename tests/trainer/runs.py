"""Helpers for the training-run tests: configs, in-process runs, child processes."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

from services.trainer.runner import TrainingTask
from services.trainer.spec import TrainConfig
from services.trainer.training import TrainingOutcome, fine_tune

BASE = dict(
    rank=4,
    learning_rate=5e-3,
    batch_size=4,
    max_seq_length=96,
    seed=3,
    eval_fraction=0.1,
)


def config(**overrides) -> TrainConfig:
    return TrainConfig(**{**BASE, **overrides})


def adapter_sha(out_dir: Path) -> str:
    data = (out_dir / "adapter_model.safetensors").read_bytes()
    return hashlib.sha256(data).hexdigest()


def train_in_process(
    base: Path,
    data: Path,
    out: Path,
    cfg: TrainConfig,
    *,
    checkpoint_dir: Path | None = None,
    events: list | None = None,
    should_stop=lambda: False,
) -> TrainingOutcome:
    def on_progress(step, total, metrics):
        if events is not None:
            events.append((step, total, metrics))

    return fine_tune(
        base,
        data,
        out,
        cfg,
        device="cpu",
        on_progress=on_progress,
        should_stop=should_stop,
        checkpoint_dir=checkpoint_dir,
    )


def task_for(
    base: Path, data: Path, root: Path, cfg: TrainConfig, memory_limit_mb: int = 0
) -> TrainingTask:
    job_id = f"test-{uuid.uuid4().hex[:12]}"
    return TrainingTask(
        job_id=job_id,
        base_dir=str(base),
        dataset_file=str(data),
        out_dir=str(root / "adapter"),
        checkpoint_dir=str(root / "checkpoints"),
        config=cfg.as_dict(),
        device="cpu",
        memory_limit_mb=memory_limit_mb,
    )


def child_pids(job_id: str) -> list[int]:
    """Live training children of a job, found by the run folder in their argv."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            state != "Z"
            and any(b"services.trainer.child" in a for a in argv)
            and any(job_id.encode() in a for a in argv)
        ):
            pids.append(int(entry.name))
    return pids


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
