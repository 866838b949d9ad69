"""Gradient checkpointing and the mixed-precision mapping of TrainConfig."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition
from services.trainer.training import precision_args
from tests.trainer.runs import adapter_sha, config, train_in_process


def test_gradient_checkpointing_trains_the_same_adapter(
    tiny_model_dir, demo_dataset_path, tmp_path
):
    plain = train_in_process(
        tiny_model_dir, demo_dataset_path, tmp_path / "plain", config(max_steps=3)
    )
    checkpointed = train_in_process(
        tiny_model_dir,
        demo_dataset_path,
        tmp_path / "checkpointed",
        config(max_steps=3, gradient_checkpointing=True),
    )
    assert checkpointed.extra["gradient_checkpointing"] is True
    assert plain.extra["gradient_checkpointing"] is False
    # Recomputed activations (same dropout masks) give the same gradients.
    assert adapter_sha(tmp_path / "checkpointed") == adapter_sha(tmp_path / "plain")
    assert plain.extra["mixed_precision"] == "no"  # fp32 on CPU


@pytest.mark.parametrize(
    ("mode", "device", "bf16_gpu", "expected"),
    [
        ("auto", "cpu", False, {"bf16": False, "fp16": False}),
        ("no", "cpu", False, {"bf16": False, "fp16": False}),
        ("auto", "cuda", True, {"bf16": True, "fp16": False}),
        ("auto", "cuda:1", False, {"bf16": False, "fp16": True}),
        ("no", "cuda", True, {"bf16": False, "fp16": False}),
        ("fp16", "cuda", True, {"bf16": False, "fp16": True}),
        ("bf16", "cuda", True, {"bf16": True, "fp16": False}),
    ],
)
def test_mixed_precision_maps_to_trainer_flags(mode, device, bf16_gpu, expected):
    assert precision_args(mode, device, bf16_gpu) == expected


@pytest.mark.parametrize("mode", ["bf16", "fp16"])
def test_half_precision_on_cpu_is_refused(mode):
    with pytest.raises(FailedPrecondition, match=f"{mode.upper()} needs a GPU"):
        precision_args(mode, "cpu", False)
