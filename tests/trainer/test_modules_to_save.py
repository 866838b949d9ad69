"""modules_to_save checks at Start: any module of the model, listed when missing."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.modeling import check_modules_to_save, model_module_names


def test_names_of_the_model_and_dotted_suffixes_pass(tiny_model_dir):
    names = model_module_names(tiny_model_dir)
    assert {"lm_head", "model.embed_tokens", "model.norm"} <= set(names)
    check_modules_to_save(["lm_head", "embed_tokens", "model.norm"], names)
    check_modules_to_save([], names)


def test_unknown_names_are_refused_listing_the_modules_that_exist(tiny_model_dir):
    names = model_module_names(tiny_model_dir)
    with pytest.raises(InvalidArgument) as err:
        check_modules_to_save(["lm_head", "classifier", "embed"], names)
    assert err.value.field == "config.modules_to_save"
    message = err.value.message
    assert message.startswith("modules_to_save ['classifier', 'embed'] match no module")
    for existing in ("'embed_tokens'", "'lm_head'", "'q_proj'", "'norm'"):
        assert existing in message
    assert "'0'" not in message  # layer indices are not module names to type


def test_a_classifier_has_a_score_head_instead_of_lm_head(tiny_model_dir):
    names = model_module_names(tiny_model_dir, classification=True)
    check_modules_to_save(["score"], names)
    with pytest.raises(InvalidArgument, match=r"\['lm_head'\] match no module"):
        check_modules_to_save(["lm_head"], names)


def test_an_unlistable_model_checks_nothing():
    check_modules_to_save(["anything"], [])


def test_start_refuses_an_unknown_module_and_queues_nothing(suite, base_model):
    import grpc

    from lorafleet.v1 import common_pb2, trainer_pb2
    from tests.trainer.helpers import chat_row, register_dataset

    dataset = register_dataset(
        suite, "mts", [chat_row(f"q{i}", f"a{i}") for i in range(8)]
    )
    trainer = suite.stub("trainer")
    before = trainer.ListTrainJobs(
        trainer_pb2.ListTrainJobsRequest(page_size=1000), timeout=10
    ).jobs
    config = common_pb2.TrainConfig(max_steps=1, modules_to_save=["no_such_head"])
    with pytest.raises(grpc.RpcError) as err:
        trainer.StartTrainJob(
            trainer_pb2.StartTrainJobRequest(
                base_model_id=base_model.id,
                dataset_id=dataset.id,
                adapter_name="mts",
                config=config,
            ),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "modules_to_save ['no_such_head'] match no module" in err.value.details()
    after = trainer.ListTrainJobs(
        trainer_pb2.ListTrainJobsRequest(page_size=1000), timeout=10
    ).jobs
    assert len(after) == len(before)
