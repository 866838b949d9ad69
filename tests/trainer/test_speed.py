"""The speed levers: switches, thread count, and adapters equal with them off."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from services.trainer import speed
from services.trainer.speed import SPEED_ENV, SpeedOptions, training_threads
from tests.trainer.runs import config, train_in_process


def test_levers_are_on_unless_turned_off_by_name():
    assert SpeedOptions.from_env({}) == SpeedOptions(True, True, True, True)
    off = SpeedOptions.from_env({SPEED_ENV: "labelled_logits=off,affinity_threads=0"})
    assert off == SpeedOptions(
        labelled_logits=False,
        saved_mask_dropout=True,
        affinity_threads=False,
        native_dropout=True,
    )
    with pytest.raises(ValueError, match="unknown lever 'fast'"):
        SpeedOptions.from_env({SPEED_ENV: "fast=on"})


def test_threads_follow_the_affinity_mask_shared_between_local_processes(
    monkeypatch,
):
    monkeypatch.setattr(speed, "usable_cpus", lambda: 6)
    assert training_threads({}) == 6
    assert training_threads({"LOCAL_WORLD_SIZE": "4"}) == 1
    assert training_threads({"LOCAL_WORLD_SIZE": "2"}) == 3
    assert training_threads({"OMP_NUM_THREADS": "2"}) == 2


def test_labelled_logits_trains_the_same_adapter_up_to_float_order(
    tiny_model_dir, demo_dataset_path, tmp_path, monkeypatch
):
    cfg = config(max_steps=3, dropout=0.0)
    sparse = train_in_process(
        tiny_model_dir, demo_dataset_path, tmp_path / "sparse", cfg
    )
    monkeypatch.setenv(SPEED_ENV, "labelled_logits=off")
    plain = train_in_process(tiny_model_dir, demo_dataset_path, tmp_path / "plain", cfg)
    assert sparse.extra["labelled_logits"] is True
    assert plain.extra["labelled_logits"] is False
    assert sparse.metrics["train_loss"] == pytest.approx(
        plain.metrics["train_loss"], abs=1e-5
    )
    assert sparse.metrics["eval_loss"] == pytest.approx(
        plain.metrics["eval_loss"], abs=1e-5
    )
    a = load_file(tmp_path / "sparse" / "adapter_model.safetensors")
    b = load_file(tmp_path / "plain" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-4), name
