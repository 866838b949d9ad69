"""Config precedence and dataset checks (row numbers, seeded splits, label masks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import datasets
from services.common.config import ConfigError, load_config
from services.common.errors import InvalidArgument
from services.common.paths import confine


def test_env_overrides_yaml_overrides_defaults(tmp_path):
    yaml_file = tmp_path / "lorafleet.yaml"
    yaml_file.write_text("log_level: DEBUG\njob_queue_size: 3\ngrace_period_s: 2.5\n")
    config = load_config(
        yaml_file,
        env={"LORAFLEET_JOB_QUEUE_SIZE": "7", "LORAFLEET_TRACE_CONSOLE": "true"},
    )
    assert (config.log_level, config.job_queue_size, config.grace_period_s) == (
        "DEBUG",
        7,
        2.5,
    )
    assert config.trace_console is True and config.max_loaded_models == 3
    assert config.address_of("registry") == "127.0.0.1:50051"


def test_unknown_or_malformed_config_fails_fast(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("job_queue: 3\n")
    with pytest.raises(ConfigError, match="unknown fields \\['job_queue'\\]"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="job_workers"):
        load_config(env={"LORAFLEET_JOB_WORKERS": "many"})


def test_paths_are_confined_to_roots(tmp_path):
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (tmp_path / "secret").write_text("x")
    (root / "link").symlink_to(tmp_path / "secret")
    assert confine(str(root / "d"), [root], field="p") == (root / "d").resolve()
    with pytest.raises(InvalidArgument, match="outside the allowed roots"):
        confine(str(root / ".." / "secret"), [root], field="p")
    with pytest.raises(InvalidArgument, match="outside the allowed roots"):
        confine(str(root / "link"), [root], field="p")


def test_malformed_rows_are_reported_by_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        '{"instruction": "a", "output": "b"}\n\n[1, 2]\n{"instruction": "c"}\n'
    )
    with pytest.raises(InvalidArgument, match="line 3: expected a JSON object"):
        datasets.load_dataset(f)
    f.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    with pytest.raises(InvalidArgument, match="line 2: 'output' must be a non-empty"):
        datasets.load_dataset(f)


def test_split_is_seeded_and_disjoint(demo_dataset_path: Path):
    task, rows = datasets.load_dataset(demo_dataset_path)
    train_a, eval_a = datasets.split_rows(rows, 0.1, 42)
    train_b, eval_b = datasets.split_rows(rows, 0.1, 42)
    _, eval_c = datasets.split_rows(rows, 0.1, 43)
    assert task == "instruction" and len(eval_a) == 32 and len(train_a) == 288
    assert [r.number for r in eval_a] == [r.number for r in eval_b]
    assert [r.number for r in eval_a] != [r.number for r in eval_c]
    assert not {r.number for r in eval_a} & {r.number for r in train_a}


def test_loss_is_on_answer_tokens_only(tiny_model_dir: Path, demo_dataset_path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    task, rows = datasets.load_dataset(demo_dataset_path)
    example = datasets.to_example(rows[0], task)
    features = datasets.tokenize_for_training(tokenizer, example, 512)
    learned = [
        t
        for t, label in zip(features["input_ids"], features["labels"], strict=True)
        if label != -100
    ]
    assert tokenizer.decode(learned).strip() == example.completion + "<|im_end|>"
    prompt = datasets.render_prompt(tokenizer, datasets.prompt_messages(example))
    assert prompt.endswith("<|im_start|>assistant\n")
