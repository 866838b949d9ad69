"""Same seed, data and config on CPU give a byte-identical adapter; lineage says so."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lorafleet.v1 import common_pb2, registry_pb2, trainer_pb2
from services.common.convert import from_struct
from services.trainer.spec import TrainConfig
from services.trainer.training import fine_tune
from tests.trainer.helpers import register_dataset, run_train_job


def _train(base: Path, data: Path, out: Path, seed: int) -> tuple[str, float]:
    cfg = TrainConfig(
        rank=4,
        learning_rate=5e-3,
        max_steps=3,
        batch_size=4,
        max_seq_length=96,
        seed=seed,
        eval_fraction=0.1,
    )
    outcome = fine_tune(
        base,
        data,
        out,
        cfg,
        device="cpu",
        on_progress=lambda *_: None,
        should_stop=lambda: False,
    )
    digest = hashlib.sha256((out / "adapter_model.safetensors").read_bytes())
    return digest.hexdigest(), outcome.metrics["train_loss"]


def test_same_seed_gives_byte_identical_adapter(
    tiny_model_dir, demo_dataset_path, tmp_path
):
    first = _train(tiny_model_dir, demo_dataset_path, tmp_path / "a", seed=11)
    second = _train(tiny_model_dir, demo_dataset_path, tmp_path / "b", seed=11)
    other = _train(tiny_model_dir, demo_dataset_path, tmp_path / "c", seed=12)
    assert first == second
    assert other[0] != first[0]


def test_adapter_metadata_records_seed_and_split(suite, base_model, demo_dataset_path):
    dataset = register_dataset(
        suite, "repro", demo_dataset_path.read_text().splitlines()
    )
    config = common_pb2.TrainConfig(
        rank=4, max_steps=2, batch_size=4, max_seq_length=96, seed=5, eval_fraction=0.1
    )
    job = run_train_job(
        suite,
        trainer_pb2.StartTrainJobRequest(
            base_model_id=base_model.id,
            dataset_id=dataset.id,
            adapter_name="repro",
            config=config,
        ),
    )
    assert job.status.state == common_pb2.JOB_STATE_SUCCEEDED, job.status.error
    assert job.dataset_report.passed
    adapter = (
        suite.stub("registry")
        .GetArtifact(registry_pb2.GetArtifactRequest(id=job.result.adapter_id))
        .artifact
    )
    meta = from_struct(adapter.metadata)
    assert meta["seed"] == 5
    split = meta["split"]
    assert split["seed"] == 5 and split["eval_fraction"] == 0.1
    assert split["split_train_rows"] == job.dataset_report.train_rows
    assert split["split_eval_rows"] == job.dataset_report.eval_rows >= 1
    assert meta["train_rows"] == split["train_examples"]
    env = from_struct(job.result.environment)
    assert env["split"] == split and env["torch"] and env["peft"]
    assert meta["dataset_digest"] == dataset.digest
    assert meta["base_model_digest"] == base_model.digest


def test_adapter_config_lists_are_written_in_sorted_order(tmp_path) -> None:
    """PEFT writes target_modules in set (hash-seed) order; we write them sorted,
    so the same training in another process has the same registry digest."""
    import json

    from services.trainer.training import _canonical_adapter_config

    path = tmp_path / "adapter_config.json"
    path.write_text(
        json.dumps(
            {
                "target_modules": ["v_proj", "q_proj", "k_proj"],
                "r": 8,
                "modules_to_save": ["score", "lm_head"],
            }
        )
    )
    _canonical_adapter_config(path)
    config = json.loads(path.read_text())
    assert config["target_modules"] == ["k_proj", "q_proj", "v_proj"]
    assert config["modules_to_save"] == ["lm_head", "score"]
    assert config["r"] == 8
