"""Every task type trains a few steps on a tiny model and learns something."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from services.common import datasets
from services.common.errors import InvalidArgument
from services.trainer.data import PreferenceCollator, prepare_data
from services.trainer.objectives import dpo_loss, sequence_logps
from services.trainer.spec import TrainConfig
from services.trainer.training import fine_tune

ROWS = {
    "text": [{"text": f"Ana orders {i} pairs of socks."} for i in range(8)],
    "instruction": [
        {"instruction": f"How many socks in order {i}?", "output": f"{i} socks"}
        for i in range(8)
    ],
    "chat": [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"Ship {i} lamps?"},
                {"role": "assistant", "content": f"Yes, {i} lamps."},
            ]
        }
        for i in range(8)
    ],
    "completion": [
        {"prompt": f"Order {i}: socks x", "completion": f" {i}"} for i in range(8)
    ],
    "classification": [
        {"text": f"ship {i} desk lamps to Oslo", "label": "lamps"}
        if i % 2
        else {"text": f"order {i} pairs of socks", "label": "socks"}
        for i in range(24)
    ],
    "preference": [
        {"prompt": f"Order {i} socks", "chosen": f"{i} x socks", "rejected": "lamps"}
        for i in range(8)
    ],
}


def _write(tmp_path: Path, rows: list[dict], name: str = "rows") -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _train(base: Path, data: Path, out: Path, **config) -> tuple[list, object]:
    """fine_tune with per-step logs: ([(step, metrics)], outcome)."""
    logs: list[tuple[int, dict]] = []
    cfg = dict(
        rank=4,
        learning_rate=1e-2,
        max_steps=4,
        batch_size=4,
        max_seq_length=64,
        eval_fraction=0.0,
    )
    outcome = fine_tune(
        base,
        data,
        out,
        TrainConfig(**{**cfg, **config}),
        device="cpu",
        on_progress=lambda step, total, m: logs.append((step, m)),
        should_stop=lambda: False,
    )
    return logs, outcome


def _losses(logs) -> list[float]:
    return [m["loss"] for _, m in logs if "loss" in m]


@pytest.mark.parametrize("task", ["text", "instruction", "chat", "completion"])
def test_causal_tasks_lower_the_loss(task, tiny_model_dir, tmp_path) -> None:
    logs, outcome = _train(tiny_model_dir, _write(tmp_path, ROWS[task]), tmp_path / "a")
    assert outcome.task == task
    losses = _losses(logs)
    assert len(losses) == 4 and losses[-1] < losses[0], losses


def test_tasks_are_detected_from_the_columns(tmp_path) -> None:
    for task, rows in ROWS.items():
        assert datasets.load_dataset(_write(tmp_path, rows, task))[0] == task


def test_completion_learns_the_completion_after_the_raw_prompt(tokenizer) -> None:
    row = datasets.Row(1, {"prompt": "Order 3: socks x", "completion": " 3 pairs"})
    example = datasets.to_example(row, "completion")
    features = datasets.tokenize_for_training(tokenizer, example, 512)
    learned = [
        t
        for t, y in zip(features["input_ids"], features["labels"], strict=True)
        if y != -100
    ]
    assert tokenizer.decode(learned) == " 3 pairs" + tokenizer.eos_token
    assert tokenizer.decode(features["input_ids"]).startswith("Order 3: socks x")
    assert "<|im_start|>" not in tokenizer.decode(features["input_ids"])
    assert datasets.prompt_text(tokenizer, example) == "Order 3: socks x"


def test_classification_trains_a_head_and_reports_accuracy(
    tiny_model_dir, tmp_path, tokenizer
) -> None:
    path = _write(tmp_path, ROWS["classification"])
    data = prepare_data(tokenizer, path, TrainConfig(eval_fraction=0.25))
    assert data.labels == ["lamps", "socks"]
    assert data.extra["class_labels"] == ["lamps", "socks"]
    held_out = [f["labels"] for f in data.eval]
    assert sorted(held_out) == [0, 0, 0, 1, 1, 1]  # stratified: 3 of each class
    logs, outcome = _train(
        tiny_model_dir,
        path,
        tmp_path / "adapter",
        eval_fraction=0.25,
        max_steps=6,
    )
    losses = _losses(logs)
    assert losses[-1] < losses[0], losses
    evals = [m for _, m in logs if "eval_accuracy" in m]
    assert evals and 0.0 <= evals[-1]["eval_accuracy"] <= 1.0
    assert evals[-1]["eval_accuracy"] == 1.0  # the two classes share no words
    assert math.isfinite(outcome.metrics["eval_loss"])
    # The final metrics (what gets registered) carry the accuracy too.
    assert outcome.metrics["eval_accuracy"] == 1.0
    assert outcome.extra["class_labels"] == ["lamps", "socks"]
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.endswith("score.weight") for k in keys), keys  # head is saved
    assert any(".lora_A." in k for k in keys)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"


def test_integer_labels_sort_numerically(tokenizer, tmp_path) -> None:
    rows = [{"text": f"row {i}", "label": i % 11} for i in range(22)]
    data = prepare_data(tokenizer, _write(tmp_path, rows), TrainConfig())
    assert data.labels == [str(i) for i in range(11)]


def test_label_outside_declared_set_is_refused_with_its_line(
    tokenizer, tmp_path
) -> None:
    rows = ROWS["classification"][:5] + [{"text": "a parcel", "label": "parcels"}]
    with pytest.raises(InvalidArgument) as err:
        prepare_data(
            tokenizer, _write(tmp_path, rows), TrainConfig(labels=["lamps", "socks"])
        )
    assert "line 6: label 'parcels' is not in the declared labels" in err.value.message
    assert "['lamps', 'socks']" in err.value.message


def test_modules_to_save_are_trained_in_full(tiny_model_dir, tmp_path) -> None:
    _train(
        tiny_model_dir,
        _write(tmp_path, ROWS["instruction"]),
        tmp_path / "a",
        modules_to_save=["lm_head"],
        max_steps=1,
    )
    with safe_open(str(tmp_path / "a" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("lm_head" in k and "lora" not in k for k in keys), keys
    with pytest.raises(InvalidArgument, match=r"modules_to_save \['no_such'\]"):
        _train(
            tiny_model_dir,
            _write(tmp_path, ROWS["instruction"]),
            tmp_path / "b",
            modules_to_save=["no_such"],
        )


def test_preference_pairs_are_collated_chosen_then_rejected(tokenizer, tmp_path):
    data = prepare_data(
        tokenizer, _write(tmp_path, ROWS["preference"]), TrainConfig(eval_fraction=0)
    )
    assert isinstance(data.collator, PreferenceCollator)
    first = data.train[0]
    batch = data.collator(data.train[:2])
    assert batch["input_ids"].shape[0] == 4
    assert (
        batch["input_ids"][0, : len(first["chosen_input_ids"])].tolist()
        == (first["chosen_input_ids"])
    )
    assert (
        batch["input_ids"][2, : len(first["rejected_input_ids"])].tolist()
        == (first["rejected_input_ids"])
    )
    # the prompt is masked the same way in both answers
    chosen, rejected = first["chosen_labels"], first["rejected_labels"]
    prompt = chosen.index(next(y for y in chosen if y != -100))
    assert rejected[:prompt] == [-100] * prompt and rejected[prompt] != -100
    assert tokenizer.decode(first["rejected_input_ids"][prompt:]).startswith("lamps")


def test_dpo_loss_matches_the_formula() -> None:
    logits = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([[-100, 3, 5, -100], [-100, -100, 2, 6]])
    logps = sequence_logps(logits, labels)
    by_hand = logits.log_softmax(-1)
    assert torch.allclose(logps[0], by_hand[0, 0, 3] + by_hand[0, 1, 5])
    assert torch.allclose(logps[1], by_hand[1, 1, 2] + by_hand[1, 2, 6])
    policy = torch.tensor([-3.0, -9.0])  # chosen, rejected
    reference = torch.tensor([-4.0, -8.0])
    loss, stats = dpo_loss(policy, reference, beta=0.5)
    margin = 0.5 * ((-3.0 + 4.0) - (-9.0 + 8.0))
    assert math.isclose(
        float(loss), -math.log(1 / (1 + math.exp(-margin))), rel_tol=1e-6
    )
    assert float(stats["reward_accuracy"]) == 1.0
    assert math.isclose(float(stats["reward_margin"]), margin, rel_tol=1e-6)


def test_preference_training_prefers_chosen_against_the_base(
    tiny_model_dir, tmp_path
) -> None:
    logs, outcome = _train(
        tiny_model_dir,
        _write(tmp_path, ROWS["preference"] * 2),
        tmp_path / "a",
        eval_fraction=0.25,
        preference_beta=0.5,
        batch_size=2,
    )
    train = [m for _, m in logs if "loss" in m]
    # step 1: a fresh adapter is the reference, so the DPO loss is exactly ln 2
    assert math.isclose(train[0]["loss"], math.log(2), rel_tol=1e-4)
    assert train[0]["reward_margin"] == 0.0
    assert train[-1]["loss"] < train[0]["loss"]
    assert train[-1]["reward_margin"] > 0 and train[-1]["reward_accuracy"] > 0.5
    evals = [m for _, m in logs if "eval_reward_accuracy" in m]
    assert evals and evals[-1]["eval_reward_margin"] > 0
    assert outcome.metrics["eval_loss"] < math.log(2)
