"""QLoRA on this CPU: a 4-bit NF4 base (bitsandbytes) under a trainable adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from transformers import AutoTokenizer

from lorafleet.v1 import common_pb2, registry_pb2, trainer_pb2
from services.common.convert import from_struct
from services.trainer.data import prepare_data
from services.trainer.model_setup import build_peft_model
from services.trainer.spec import TrainConfig
from services.trainer.training import fine_tune
from tests.trainer.helpers import register_dataset, run_train_job

pytest.importorskip("bitsandbytes")

ROWS = [
    {"instruction": f"How many socks in order {i}?", "output": f"{i} pairs of socks"}
    for i in range(8)
]


@pytest.fixture
def rows_file(tmp_path) -> Path:
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return path


def _cfg(**kw) -> TrainConfig:
    base = dict(
        method="qlora",
        rank=4,
        learning_rate=1e-2,
        max_steps=4,
        batch_size=4,
        max_seq_length=64,
        eval_fraction=0.0,
    )
    return TrainConfig(**{**base, **kw})


def test_base_is_loaded_in_nf4_with_double_quantisation(
    tiny_model_dir, rows_file
) -> None:
    import bitsandbytes as bnb

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    data = prepare_data(tokenizer, rows_file, _cfg())
    model, targets = build_peft_model(tiny_model_dir, _cfg(), "cpu", data)
    assert data.extra["base_quantization"] == "nf4"
    assert data.extra["base_compute_dtype"] == "float32"
    proj = model.base_model.model.model.layers[0].self_attn.q_proj
    base_layer = proj.base_layer
    assert isinstance(base_layer, bnb.nn.Linear4bit)
    state = base_layer.weight.quant_state
    assert state.quant_type == "nf4" and state.nested  # double quantisation
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert "q_proj" in targets


def test_qlora_steps_lower_the_loss_and_save_an_adapter(
    tiny_model_dir, rows_file, tmp_path
) -> None:
    losses: list[float] = []
    outcome = fine_tune(
        tiny_model_dir,
        rows_file,
        tmp_path / "adapter",
        _cfg(),
        device="cpu",
        on_progress=lambda s, t, m: losses.append(m["loss"]) if "loss" in m else None,
        should_stop=lambda: False,
    )
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert outcome.metrics["steps"] == 4
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    for target in ("q_proj", "v_proj", "down_proj"):
        assert any(f".{target}.lora_A" in k for k in keys), keys[:4]
    # only the adapter is saved: no 4-bit base weights leak into it
    assert all("lora_" in k for k in keys)


def test_start_train_job_with_qlora_runs_here(suite, base_model) -> None:
    dataset = register_dataset(suite, "qlora", ROWS)
    job = run_train_job(
        suite,
        trainer_pb2.StartTrainJobRequest(
            base_model_id=base_model.id,
            dataset_id=dataset.id,
            adapter_name="qlora",
            config=common_pb2.TrainConfig(
                method=common_pb2.LORA_METHOD_QLORA,
                rank=4,
                max_steps=2,
                batch_size=4,
                max_seq_length=64,
            ),
        ),
    )
    assert job.status.state == common_pb2.JOB_STATE_SUCCEEDED, job.status.error
    assert job.effective_config.method == common_pb2.LORA_METHOD_QLORA
    adapter = (
        suite.stub("registry")
        .GetArtifact(registry_pb2.GetArtifactRequest(id=job.result.adapter_id))
        .artifact
    )
    assert from_struct(adapter.metadata)["method"] == "qlora"
    # The merger reads this to merge into the de-quantised base.
    assert from_struct(adapter.metadata)["base_quantization"] == "nf4"
