"""RunWorkflow refuses bad requests before it registers or starts anything, and
relayed errors keep their google.rpc details under this request's field names."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lorafleet.v1 import common_pb2, gateway_pb2, registry_pb2, trainer_pb2
from tests.conftest import TRAIN


def _violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    found = []
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.description) for v in bad.field_violations]
    return found


def _state(suite) -> tuple:
    """Everything a RunWorkflow could leave behind."""
    registry, trainer = suite.stub("registry"), suite.stub("trainer")
    datasets = registry.ListArtifacts(
        registry_pb2.ListArtifactsRequest(
            kind=common_pb2.ARTIFACT_KIND_DATASET, page_size=1000
        ),
        timeout=10,
    ).artifacts
    train_jobs = trainer.ListTrainJobs(
        trainer_pb2.ListTrainJobsRequest(page_size=1000), timeout=10
    ).jobs
    workflows = (
        suite.stub("gateway")
        .ListWorkflowJobs(
            gateway_pb2.ListWorkflowJobsRequest(page_size=1000), timeout=10
        )
        .jobs
    )
    return (
        sorted(a.id for a in datasets),
        sorted(j.status.job_id for j in train_jobs),
        sorted(j.status.job_id for j in workflows),
    )


def _fresh_dataset(suite, demo_dataset_path, name: str):
    """A dataset file the registry has never seen (so registering it would show)."""
    path = suite.config.data_dir / "datasets" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = demo_dataset_path.read_text().splitlines()
    path.write_text("\n".join(rows[:40] + [rows[0].replace("}", ', "n": 1}')]) + "\n")
    return path


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            lambda r: setattr(r.train_config, "rank", 0),
            "train_config.rank",
            "train_config.rank",
        ),
        (
            lambda r: setattr(r.train_config, "learning_rate", 5.0),
            "train_config.learning_rate",
            "train_config.learning_rate",
        ),
        (
            lambda r: r.train_config.target_modules.append("no_such_proj"),
            "train_config.target_modules",
            "no_such_proj",
        ),
        (
            lambda r: setattr(r.gates, "max_latency_ratio", -1.0),
            "gates.max_latency_ratio",
            "max_latency_ratio",
        ),
        (lambda r: setattr(r, "validation_examples", -3), "validation_examples", "-3"),
        (
            lambda r: (
                setattr(r, "strategy", common_pb2.DEPLOYMENT_STRATEGY_CANARY),
                r.rollout.canary.steps_bps.extend([5000, 2500]),
            ),
            "rollout.canary.steps_bps[1]",
            "rollout.canary.steps_bps must increase",
        ),
        (
            lambda r: setattr(r.rollout, "strategy", "yolo"),
            "rollout.strategy",
            "known strategies",
        ),
    ],
)
def test_a_refused_workflow_leaves_nothing_behind(
    suite, base_model, demo_dataset_path, change, field, words
):
    path = _fresh_dataset(suite, demo_dataset_path, f"refused-{field}")
    request = gateway_pb2.RunWorkflowRequest(
        base_model_id=base_model.id, dataset_path=str(path), name="refused"
    )
    request.train_config.CopyFrom(TRAIN)
    change(request)
    before = _state(suite)
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("gateway").RunWorkflow(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert words in err.value.details()
    # The field path names this request's field, in the detail and the message.
    assert [f for f, _ in _violations(err.value)] == [field]
    # A path the trainer's message names is renamed there too.
    assert "config." not in err.value.details().replace("train_config.", "")
    assert _state(suite) == before  # no dataset, no train job, no workflow


def test_a_bad_dataset_is_refused_before_it_is_registered(suite, base_model):
    path = suite.config.data_dir / "datasets" / "assistant-first.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, '
        '{"role": "assistant", "content": "hello"}]}\n'
        * 3
        + '{"messages": [{"role": "assistant", "content": "I start"}]}\n'
    )
    request = gateway_pb2.RunWorkflowRequest(
        base_model_id=base_model.id, dataset_path=str(path), name="assistant-first"
    )
    request.train_config.CopyFrom(TRAIN)
    before = _state(suite)
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("gateway").RunWorkflow(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "line 4" in err.value.details()
    assert _state(suite) == before


def test_an_unknown_base_is_not_found_under_its_own_field(suite):
    request = gateway_pb2.RunWorkflowRequest(
        base_model_id="no-such-base", dataset_id="x", name="x"
    )
    with pytest.raises(grpc.RpcError) as err:
        suite.stub("gateway").RunWorkflow(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-base" in err.value.details()
    assert [f for f, _ in _violations(err.value)] == ["base_model_id"]
