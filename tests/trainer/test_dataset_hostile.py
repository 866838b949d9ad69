"""Datasets that used to crash or slip through Start: chat turn order, one row.

Each is a fatal dataset issue naming the line (and the turn), so ValidateDataset
fails the report and StartTrainJob is INVALID_ARGUMENT with no job queued.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from transformers import AutoTokenizer

from lorafleet.v1 import common_pb2, trainer_pb2
from services.trainer.dataset_report import build_report
from tests.trainer.helpers import chat_row, register_dataset


def _turns(*roles: str) -> dict:
    return {"messages": [{"role": r, "content": f"{r} says hi"} for r in roles]}


# (rows, the fatal issue's line, words its message must hold)
BAD_CHATS = {
    "assistant-first": (
        [chat_row("q", "a"), _turns("assistant", "user", "assistant")],
        2,
        ["messages[0] is an assistant turn with no user turn before it"],
    ),
    "assistant-after-system": (
        [chat_row("q", "a"), chat_row("r", "b"), _turns("system", "assistant")],
        3,
        ["messages[1] is an assistant turn with no user turn before it"],
    ),
    "two-users": (
        [_turns("system", "user", "user", "assistant"), chat_row("q", "a")],
        1,
        ["messages[2] is a second user turn in a row (after messages[1])"],
    ),
    "two-assistants": (
        [chat_row("q", "a"), _turns("user", "assistant", "assistant")],
        2,
        ["messages[2] is a second assistant turn in a row", "alternate"],
    ),
}


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("case", sorted(BAD_CHATS))
def test_chat_turn_order_is_a_fatal_issue_naming_line_and_turn(
    tmp_path, tokenizer, case
):
    rows, line, words = BAD_CHATS[case]
    report = build_report(_write(tmp_path, rows), tokenizer, eval_fraction=0.0)
    assert [(i.line, i.kind) for i in report.fatal] == [(line, "schema")]
    for word in words:
        assert f"line {line}: " in report.summary and word in report.summary


def test_alternating_turns_after_system_prompts_pass(tmp_path, tokenizer):
    rows = [
        _turns("system", "user", "assistant", "user", "assistant"),
        _turns("user", "assistant", "user"),  # trailing question: answer learned
    ]
    report = build_report(_write(tmp_path, rows), tokenizer, eval_fraction=0.0)
    assert report.passed, report.summary


def test_one_row_needs_eval_fraction_zero(tmp_path, tokenizer):
    path = _write(tmp_path, [{"instruction": "q", "output": "a"}])
    held_out = build_report(path, tokenizer, eval_fraction=0.1)
    assert [(i.line, i.kind) for i in held_out.fatal] == [(0, "empty")]
    assert "1 usable row: too few to hold out eval_fraction=0.1" in held_out.summary
    assert "set eval_fraction to 0" in held_out.summary
    train_only = build_report(path, tokenizer, eval_fraction=0.0)
    assert train_only.passed and (train_only.train_rows, train_only.eval_rows) == (
        1,
        0,
    )


# -- the same through the trainer service -------------------------------------


def _jobs(suite) -> int:
    return len(
        suite.stub("trainer")
        .ListTrainJobs(trainer_pb2.ListTrainJobsRequest(), timeout=10)
        .jobs
    )


@pytest.mark.parametrize("case", ["assistant-first", "two-users"])
def test_bad_chat_rows_fail_validation_and_start_over_grpc(suite, base_model, case):
    rows, line, words = BAD_CHATS[case]
    dataset = register_dataset(suite, f"hostile-{case}", rows)
    trainer = suite.stub("trainer")
    report = trainer.ValidateDataset(
        trainer_pb2.ValidateDatasetRequest(
            dataset_id=dataset.id, base_model_id=base_model.id, eval_fraction=0.0
        ),
        timeout=60,
    ).report
    assert not report.passed
    fatal = [(i.line, i.kind) for i in report.issues if i.fatal]
    assert fatal == [(line, "schema")]
    before = _jobs(suite)
    with pytest.raises(grpc.RpcError) as err:
        trainer.StartTrainJob(
            trainer_pb2.StartTrainJobRequest(
                base_model_id=base_model.id,
                dataset_id=dataset.id,
                adapter_name="hostile",
                config=common_pb2.TrainConfig(max_steps=1, eval_fraction=0.0),
            ),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    for word in words:
        assert f"line {line}: " in err.value.details()
        assert word in err.value.details(), err.value.details()
    assert _jobs(suite) == before


def test_a_one_row_dataset_over_grpc(suite, base_model):
    dataset = register_dataset(suite, "hostile-one-row", [chat_row("q", "a")])
    trainer = suite.stub("trainer")

    def validate(eval_fraction: float) -> trainer_pb2.DatasetReport:
        return trainer.ValidateDataset(
            trainer_pb2.ValidateDatasetRequest(
                dataset_id=dataset.id,
                base_model_id=base_model.id,
                eval_fraction=eval_fraction,
            ),
            timeout=60,
        ).report

    held_out = validate(0.1)
    assert not held_out.passed
    assert [(i.line, i.kind) for i in held_out.issues if i.fatal] == [(0, "empty")]
    assert "too few to hold out eval_fraction=0.1" in held_out.summary
    train_only = validate(0.0)
    assert train_only.passed and (train_only.train_rows, train_only.eval_rows) == (
        1,
        0,
    )
