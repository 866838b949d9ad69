"""StartTrainJob refuses bad input over real gRPC with a precise status and no job."""

from __future__ import annotations

import grpc
import pytest

from lorafleet.v1 import common_pb2, trainer_pb2
from tests.trainer.helpers import chat_row, register_dataset


@pytest.fixture(scope="module")
def chat_data(suite):
    rows = [chat_row(f"What is {i} + {i}?", str(2 * i)) for i in range(12)]
    return register_dataset(suite, "start-errors", rows)


def _start(suite, base_id: str, dataset_id: str, **config):
    request = trainer_pb2.StartTrainJobRequest(
        base_model_id=base_id,
        dataset_id=dataset_id,
        adapter_name="start-errors",
        config=common_pb2.TrainConfig(max_steps=1, max_seq_length=64, **config),
    )
    return suite.stub("trainer").StartTrainJob(request, timeout=60)


def _job_count(suite) -> int:
    return len(
        suite.stub("trainer")
        .ListTrainJobs(trainer_pb2.ListTrainJobsRequest(page_size=1000), timeout=10)
        .jobs
    )


def _refused(suite, code, call) -> str:
    before = _job_count(suite)
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    assert _job_count(suite) == before  # no job was created
    return err.value.details()


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"rank": -1}, ["config.rank", "got -1"]),
        ({"rank": 0}, ["config.rank", "got 0"]),  # explicit 0 is not "unset"
        ({"learning_rate": 0.0}, ["config.learning_rate", "got 0"]),
        ({"learning_rate": -0.001}, ["config.learning_rate", "got -0.001"]),
        ({"learning_rate": 3.0}, ["config.learning_rate", "got 3", "1e-5 to 1e-3"]),
    ],
)
def test_out_of_range_hyperparameters(suite, base_model, chat_data, config, words):
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(suite, base_model.id, chat_data.id, **config),
    )
    for word in words:
        assert word in message, message


def test_target_modules_that_match_nothing_list_the_real_ones(
    suite, base_model, chat_data
):
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(
            suite, base_model.id, chat_data.id, target_modules=["q_proj", "c_attn"]
        ),
    )
    assert "['c_attn']" in message
    for real in ("q_proj", "v_proj", "down_proj", "lm_head"):
        assert real in message, message


def test_chat_row_without_assistant_names_its_line(suite, base_model):
    rows = [chat_row("hi", "hello")] * 3 + [
        {"messages": [{"role": "user", "content": "only a question"}]}
    ]
    dataset = register_dataset(suite, "no-assistant", rows)
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(suite, base_model.id, dataset.id),
    )
    assert "line 4: no assistant message to learn from (turns: user)" in message
    assert '{"role": "assistant", "content": ...}' in message


def test_classification_row_without_label_names_its_line(suite, base_model):
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(4)]
    rows.insert(2, {"text": "forgot the label", "label": ""})
    dataset = register_dataset(suite, "no-label", rows)
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(suite, base_model.id, dataset.id),
    )
    assert "line 3: 'label' must be a non-empty string or an integer" in message


def test_preference_pair_with_identical_answers_names_its_line(suite, base_model):
    rows = [{"prompt": f"p{i}", "chosen": "yes", "rejected": "no"} for i in range(3)]
    rows.append({"prompt": "p", "chosen": "same", "rejected": "same"})
    dataset = register_dataset(suite, "same-pair", rows)
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(suite, base_model.id, dataset.id),
    )
    assert "line 4: 'chosen' and 'rejected' are the same answer" in message


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            {"task_type": common_pb2.TASK_TYPE_CLASSIFICATION, "packing": True},
            ["config.packing", "not classification"],
        ),
        (
            {"task_type": common_pb2.TASK_TYPE_PREFERENCE, "packing": True},
            ["config.packing", "not preference"],
        ),
        (
            {"task_type": common_pb2.TASK_TYPE_CHAT, "labels": ["a", "b"]},
            ["config.labels", "not task_type chat"],
        ),
        ({"labels": ["only"]}, ["config.labels", "at least 2 labels"]),
    ],
)
def test_task_options_that_do_not_apply_are_refused(
    suite, base_model, chat_data, config, words
):
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(suite, base_model.id, chat_data.id, **config),
    )
    for word in words:
        assert word in message, message


def test_unknown_base_model_is_not_found(suite, chat_data):
    message = _refused(
        suite,
        grpc.StatusCode.NOT_FOUND,
        lambda: _start(suite, "no-such-base", chat_data.id),
    )
    assert "no-such-base" in message


def test_dataset_failing_validation_carries_the_report_summary(suite, base_model):
    rows = [chat_row("q", "a"), "{not json", {"text": "wrong schema"}]
    dataset = register_dataset(suite, "bad-report", rows)
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(suite, base_model.id, dataset.id),
    )
    assert "line 2: invalid JSON" in message
    assert "line 3: no assistant" in message or "line 3: 'messages'" in message


def test_backends_this_machine_lacks_are_failed_precondition() -> None:
    """bf16 / more GPUs than present are refused up front with the fix named."""
    from services.common.errors import FailedPrecondition
    from services.trainer import capabilities
    from services.trainer.spec import TrainConfig

    cpu = capabilities.Capabilities(
        device="cpu", gpus=0, bf16_gpu=False, bitsandbytes="0.50.2"
    )
    with pytest.raises(FailedPrecondition, match="BF16 needs a GPU"):
        capabilities.check(TrainConfig(mixed_precision="bf16"), cpu)
    with pytest.raises(FailedPrecondition, match="num_gpus 2 asks for more GPUs"):
        capabilities.check(TrainConfig(num_gpus=2), cpu)
    no_bnb = capabilities.Capabilities(
        device="cpu", gpus=0, bf16_gpu=False, bitsandbytes="", bitsandbytes_error="nope"
    )
    with pytest.raises(FailedPrecondition, match="QLORA needs bitsandbytes"):
        capabilities.check(TrainConfig(method="qlora"), no_bnb)
    capabilities.check(TrainConfig(method="qlora"), cpu)  # bnb present: allowed


def test_label_outside_the_declared_set_is_refused_at_start(suite, base_model):
    """A classification row whose label is not declared: INVALID_ARGUMENT, no job."""
    rows = [
        {"text": f"review {i}", "label": "pos" if i % 2 else "neg"} for i in range(10)
    ]
    rows[6] = {"text": "review 6", "label": "meh"}
    dataset = register_dataset(suite, "labels-declared", rows)
    message = _refused(
        suite,
        grpc.StatusCode.INVALID_ARGUMENT,
        lambda: _start(
            suite,
            base_model.id,
            dataset.id,
            task_type=common_pb2.TASK_TYPE_CLASSIFICATION,
            labels=["neg", "pos"],
        ),
    )
    assert "line 7" in message and "'meh'" in message, message
    report = (
        suite.stub("trainer")
        .ValidateDataset(
            trainer_pb2.ValidateDatasetRequest(
                dataset_id=dataset.id,
                base_model_id=base_model.id,
                labels=["neg", "pos"],
            ),
            timeout=60,
        )
        .report
    )
    assert not report.passed
    assert any(i.kind == "label" and i.line == 7 and i.fatal for i in report.issues)
    # The distribution of the valid rows is still reported.
    assert dict(report.label_counts) == {"neg": 4, "pos": 5}
