"""Training in a child process: same adapter, progress relayed, failures contained."""

from __future__ import annotations

import shutil

import pytest

from services.common.errors import (
    Cancelled,
    Internal,
    InvalidArgument,
    ResourceExhausted,
)
from services.trainer.runner import run_training
from tests.trainer.runs import (
    adapter_sha,
    alive,
    child_pids,
    config,
    task_for,
    train_in_process,
)

PROGRESS_KEYS = {"loss", "learning_rate", "epoch", "tokens_per_s", "elapsed_s", "eta_s"}


def test_child_gives_the_in_process_adapter_and_relays_progress(
    tiny_model_dir, demo_dataset_path, tmp_path
):
    cfg = config(max_steps=4, eval_steps=2, checkpoint_steps=2)
    reference = train_in_process(
        tiny_model_dir, demo_dataset_path, tmp_path / "ref", cfg
    )
    task = task_for(tiny_model_dir, demo_dataset_path, tmp_path / "run", cfg)
    events = []
    outcome = run_training(task, lambda *e: events.append(e), lambda: False)

    assert adapter_sha(tmp_path / "run" / "adapter") == adapter_sha(tmp_path / "ref")
    assert set(outcome.metrics) == set(reference.metrics)
    for key in ("train_loss", "eval_loss", "best_step", "steps"):
        assert outcome.metrics[key] == reference.metrics[key]
    assert outcome.extra["resumed_from_step"] == 0
    assert outcome.total_steps == 4 and outcome.train_rows == reference.train_rows
    steps = [step for step, _, _ in events]
    assert steps == sorted(steps) and steps[-1] == 4
    assert all(total == 4 for _, total, _ in events)
    train_events = [m for _, _, m in events if "loss" in m]
    assert len(train_events) == 4
    assert PROGRESS_KEYS <= set(train_events[-1])
    assert train_events[-1]["eta_s"] == 0.0 and train_events[0]["eta_s"] > 0
    assert any("eval_loss" in m for _, _, m in events)


def test_memory_limit_fails_the_run_with_a_hint(
    tiny_model_dir, demo_dataset_path, tmp_path
):
    # 300 MiB of address space cannot even map torch's libraries.
    cfg = config(max_steps=2, batch_size=8, gradient_accumulation_steps=2)
    task = task_for(tiny_model_dir, demo_dataset_path, tmp_path, cfg, 300)
    with pytest.raises(ResourceExhausted) as err:
        run_training(task, lambda *e: None, lambda: False)
    message = err.value.message
    assert message.startswith("training ran out of memory under the trainer's 300 MiB")
    assert "config.batch_size (8 -> 4)" in message
    assert "config.gradient_accumulation_steps (2 -> 4)" in message
    assert "config.gradient_checkpointing" in message
    assert "method QLORA" in message and "config.max_seq_length (now 96)" in message
    assert not child_pids(task.job_id)
    assert not (tmp_path / "adapter").exists()


def test_cancel_stops_the_child(tiny_model_dir, demo_dataset_path, tmp_path):
    cfg = config(max_steps=400, checkpoint_steps=1000)
    task = task_for(tiny_model_dir, demo_dataset_path, tmp_path, cfg)
    seen: list[int] = []
    pids: list[int] = []

    def on_progress(step, total, metrics):
        if not pids:
            pids.extend(child_pids(task.job_id))
        seen.append(step)

    with pytest.raises(Cancelled):
        run_training(task, on_progress, lambda: bool(seen))
    assert len(pids) == 1
    assert not alive(pids[0])
    assert not child_pids(task.job_id)
    assert seen and seen[-1] < 400
    assert not (tmp_path / "adapter").exists()


def test_crash_reports_the_childs_output(tiny_model_dir, demo_dataset_path, tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)
    task = task_for(broken, demo_dataset_path, tmp_path / "run", config(max_steps=2))
    with pytest.raises(Internal) as err:
        run_training(task, lambda *e: None, lambda: False)
    message = err.value.message
    assert message.startswith("training crashed (")
    assert "Traceback (most recent call last)" in message
    assert "safetensors" in message.lower()
    assert len(message) < 9000  # a bounded tail, not the whole log


def test_domain_errors_keep_class_and_message(
    tiny_model_dir, demo_dataset_path, tmp_path
):
    cfg = config(max_steps=2, max_seq_length=8)
    with pytest.raises(InvalidArgument) as direct:
        train_in_process(tiny_model_dir, demo_dataset_path, tmp_path / "ref", cfg)
    task = task_for(tiny_model_dir, demo_dataset_path, tmp_path / "run", cfg)
    with pytest.raises(InvalidArgument) as relayed:
        run_training(task, lambda *e: None, lambda: False)
    assert type(relayed.value) is type(direct.value)
    assert relayed.value.message == direct.value.message
    assert relayed.value.field == direct.value.field
