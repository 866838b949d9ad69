"""The dataset report: schema errors by line, empties, duplicates, truncation, split."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from transformers import AutoTokenizer

from lorafleet.v1 import common_pb2, trainer_pb2
from services.common import datasets
from services.trainer.dataset_report import build_report
from tests.trainer.helpers import chat_row, register_dataset


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def _write(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "data.jsonl"
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n")
    return path


def _instr(i: int, output: str = "yes") -> dict:
    return {"instruction": f"question {i}", "output": output}


def test_clean_dataset_counts_rows_tokens_and_seeded_split(tmp_path, tokenizer):
    path = _write(tmp_path, [_instr(i) for i in range(20)])
    report = build_report(path, tokenizer, max_seq_length=512, eval_fraction=0.2)
    assert report.passed and report.task == "instruction"
    assert report.row_count == 20 and report.duplicate_rows == 0
    assert (report.train_rows, report.eval_rows) == (16, 4)
    rows = datasets.load_dataset(path)[1]
    train, held_out = datasets.split_rows(rows, 0.2, 42)
    assert (len(train), len(held_out)) == (report.train_rows, report.eval_rows)
    assert report.total_tokens > 20 and report.over_length_rows == 0
    assert "20 instruction rows" in report.summary


def test_schema_errors_are_fatal_and_name_every_line(tmp_path, tokenizer):
    lines = [_instr(0), "{broken", "[1, 2]", _instr(3, output=""), _instr(4)]
    report = build_report(_write(tmp_path, lines), tokenizer)
    assert not report.passed
    fatal = [(i.line, i.kind) for i in report.fatal]
    assert fatal == [(2, "schema"), (3, "schema"), (4, "schema")]
    assert "line 2: invalid JSON" in report.summary
    assert "line 3: expected a JSON object, got list" in report.summary
    assert "line 4: 'output' must be a non-empty string" in report.summary


def test_empty_and_duplicate_rows_are_reported_but_not_fatal(tmp_path, tokenizer):
    lines = [_instr(0), "", _instr(1), _instr(0), _instr(2), _instr(0)]
    report = build_report(_write(tmp_path, lines), tokenizer)
    assert report.passed, report.summary
    assert report.empty_rows == 1 and report.duplicate_rows == 2
    dupes = [(i.line, i.message) for i in report.issues if i.kind == "duplicate"]
    assert dupes == [(4, "duplicate of line 1"), (6, "duplicate of line 1")]
    assert [i.line for i in report.issues if i.kind == "empty"] == [2]


def test_empty_file_fails(tmp_path, tokenizer):
    report = build_report(_write(tmp_path, [""]), tokenizer)
    assert not report.passed and "is empty" in report.summary


def test_over_length_rows_report_dropped_tokens(tmp_path, tokenizer):
    long_answer = "socks " * 60
    lines = [_instr(i) for i in range(5)] + [_instr(9, output=long_answer)]
    path = _write(tmp_path, lines)
    full = build_report(path, tokenizer, max_seq_length=4096)
    cut = build_report(path, tokenizer, max_seq_length=32)
    longest = full.max_row_tokens
    assert longest > 32 and full.over_length_rows == 0
    over = [i for i in cut.issues if i.kind == "too_long"]
    assert over[-1].line == 6
    assert f"{longest} tokens; truncation to 32 drops {longest - 32}" in (
        over[-1].message
    )
    assert cut.truncated_tokens == sum(
        max(0, n - 32) for n in _lengths(path, tokenizer)
    )


def _lengths(path: Path, tokenizer) -> list[int]:
    task, rows = datasets.load_dataset(path)
    return [
        len(
            datasets.tokenize_for_training(
                tokenizer, datasets.to_example(r, task), 10**6
            )["input_ids"]
        )
        for r in rows
    ]


def test_rows_losing_every_answer_token(tmp_path, tokenizer):
    long_prompt = {"instruction": "word " * 80, "output": "ok"}
    path = _write(tmp_path, [long_prompt, _instr(1), _instr(2)])
    report = build_report(path, tokenizer, max_seq_length=24, eval_fraction=0.0)
    assert report.passed and report.no_answer_rows == 1
    assert [i.line for i in report.issues if i.kind == "no_answer"] == [1]
    only_long = _write(tmp_path, [long_prompt, long_prompt])
    report = build_report(only_long, tokenizer, max_seq_length=24, eval_fraction=0.0)
    assert not report.passed and "no training row keeps an answer" in report.summary


def test_validate_dataset_rpc(suite, base_model):
    rows = [chat_row(f"q{i}", f"a{i}") for i in range(9)] + [chat_row("q0", "a0"), ""]
    dataset = register_dataset(suite, "report-rpc", rows)
    trainer = suite.stub("trainer")
    report = trainer.ValidateDataset(
        trainer_pb2.ValidateDatasetRequest(
            dataset_id=dataset.id,
            base_model_id=base_model.id,
            max_seq_length=16,
            eval_fraction=0.2,
            seed=3,
        ),
        timeout=30,
    ).report
    assert report.passed and report.task_type == common_pb2.TASK_TYPE_CHAT
    assert report.row_count == 10 and report.duplicate_rows == 1
    assert (report.train_rows, report.eval_rows) == (8, 2)
    assert report.seed == 3 and report.max_seq_length == 16
    assert report.over_length_rows == 10 and report.truncated_tokens > 0
    assert any(i.kind == "duplicate" and i.line == 10 for i in report.issues)
    with pytest.raises(grpc.RpcError) as err:
        trainer.ValidateDataset(
            trainer_pb2.ValidateDatasetRequest(
                dataset_id=dataset.id, base_model_id=base_model.id, eval_fraction=0.9
            ),
            timeout=30,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "eval_fraction" in err.value.details()


def _cls(i: int, label) -> dict:
    return {"text": f"row {i} about {label}", "label": label}


def test_classification_label_distribution_and_stratified_split(tmp_path, tokenizer):
    lines = [_cls(i, "spam") for i in range(24)] + [_cls(i, "ham") for i in range(6)]
    report = build_report(_write(tmp_path, lines), tokenizer, eval_fraction=0.2)
    assert report.passed and report.task == "classification"
    assert report.labels == ["ham", "spam"]
    assert report.label_counts == {"ham": 6, "spam": 24}
    assert report.imbalance_ratio == 4.0
    assert (report.train_rows, report.eval_rows) == (24, 6)
    rows = datasets.load_dataset(_write(tmp_path, lines))[1]
    train, held_out = datasets.split_for_task(rows, "classification", 0.2, 42)
    # 6 held out in proportion: 4.8 spam and 1.2 ham, largest remainder to spam
    assert sorted(r.data["label"] for r in held_out) == ["ham"] + ["spam"] * 5
    assert not {r.number for r in train} & {r.number for r in held_out}
    again = datasets.split_for_task(rows, "classification", 0.2, 42)[1]
    assert [r.number for r in again] == [r.number for r in held_out]  # seeded
    assert "labels ham 6, spam 24 (imbalance 4.0)" in report.summary
    assert not [i for i in report.issues if i.kind == "label"]


def test_very_imbalanced_or_unused_labels_warn(tmp_path, tokenizer):
    lines = [_cls(i, "spam") for i in range(22)] + [_cls(i, "ham") for i in range(2)]
    path = _write(tmp_path, lines)
    report = build_report(path, tokenizer, labels=["spam", "ham", "eggs"])
    assert report.passed, report.summary
    assert report.label_counts == {"spam": 22, "ham": 2, "eggs": 0}
    assert report.imbalance_ratio == 11.0
    warnings = [i.message for i in report.issues if i.kind == "label"]
    assert any("declared label 'eggs' has no rows" in w for w in warnings)
    assert any("'spam' has 22 rows, 'ham' only 2 (ratio 11.0)" in w for w in warnings)


def test_label_errors_are_fatal_and_name_the_line(tmp_path, tokenizer):
    lines = [_cls(0, "spam"), _cls(1, "ham"), _cls(2, "eggs"), {"text": "no label"}]
    lines.append({"text": "float label", "label": 1.5})
    report = build_report(_write(tmp_path, lines), tokenizer, labels=["spam", "ham"])
    assert not report.passed
    assert [(i.line, i.kind) for i in report.fatal] == [
        (3, "label"),
        (4, "schema"),
        (5, "schema"),
    ]
    assert (
        "line 3: label 'eggs' is not in the declared labels ['spam', 'ham']"
        in report.summary
    )
    assert "line 4: 'label' must be a non-empty string or an integer, got null" in (
        report.summary
    )
    one = build_report(_write(tmp_path, [_cls(i, "spam") for i in range(4)]), tokenizer)
    assert not one.passed and "at least 2 labels; found only 'spam'" in one.summary
    chat = build_report(
        _write(tmp_path, [chat_row("q", "a")] * 2), tokenizer, labels=["a", "b"]
    )
    assert not chat.passed and "this is a chat dataset" in chat.summary


def test_chat_row_without_assistant_is_a_fatal_no_assistant_issue(tmp_path, tokenizer):
    lines = [chat_row("q", "a"), {"messages": [{"role": "user", "content": "hi"}]}]
    report = build_report(_write(tmp_path, lines), tokenizer)
    assert [(i.line, i.kind) for i in report.fatal] == [(2, "no_assistant")]
    assert "line 2: no assistant message to learn from (turns: user)" in (
        report.summary
    )


def test_preference_rows_count_both_answers(tmp_path, tokenizer):
    pair = {"prompt": "Order socks", "chosen": "2 x socks", "rejected": "lamps " * 40}
    same = {"prompt": "Order socks", "chosen": "socks", "rejected": " socks "}
    path = _write(tmp_path, [pair, {**pair, "prompt": "Order lamps"}])
    report = build_report(path, tokenizer, max_seq_length=24, eval_fraction=0.0)
    assert report.passed and report.task == "preference"
    long = [i for i in report.issues if i.kind == "too_long"]
    assert [i.line for i in long] == [1, 2] and " and " in long[0].message
    assert report.max_row_tokens > 40 and report.over_length_rows == 2
    bad = build_report(_write(tmp_path, [pair, same]), tokenizer)
    assert "line 2: 'chosen' and 'rejected' are the same answer" in bad.summary


def test_validate_dataset_rpc_reports_label_counts(suite, base_model):
    rows = [_cls(i, "spam") for i in range(9)] + [_cls(i, "ham") for i in range(3)]
    dataset = register_dataset(suite, "report-labels", rows)
    report = (
        suite.stub("trainer")
        .ValidateDataset(
            trainer_pb2.ValidateDatasetRequest(
                dataset_id=dataset.id, base_model_id=base_model.id, eval_fraction=0.25
            ),
            timeout=30,
        )
        .report
    )
    assert report.passed and report.task_type == common_pb2.TASK_TYPE_CLASSIFICATION
    assert dict(report.label_counts) == {"ham": 3, "spam": 9}
    assert report.imbalance_ratio == 3.0
    assert (report.train_rows, report.eval_rows) == (9, 3)


def test_report_for_a_train_config_checks_labels_and_options(tmp_path, tokenizer):
    from services.common.errors import InvalidArgument
    from services.trainer.dataset_report import report_for
    from services.trainer.spec import TrainConfig

    path = _write(tmp_path, [_cls(0, "spam"), _cls(1, "ham"), _cls(2, "eggs")])
    report = report_for(path, tokenizer, TrainConfig(labels=["spam", "ham"]))
    assert not report.passed
    assert "line 3: label 'eggs' is not in the declared labels" in report.summary
    with pytest.raises(InvalidArgument, match="config.packing applies to causal-LM"):
        report_for(path, tokenizer, TrainConfig(packing=True))
    assert report_for(path, tokenizer, TrainConfig(group_by_length=True)).passed
