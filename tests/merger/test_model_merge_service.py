"""Multi-model merges through MergerService over real gRPC, and their bad input."""

from __future__ import annotations

import shutil

import grpc
import pytest

from lorafleet.v1 import common_pb2, merger_pb2, registry_pb2
from services.common.convert import struct
from tests.merger.test_model_merge import perturbed


@pytest.fixture(scope="module")
def models(suite, base_model, tiny_model_dir):
    registry = suite.stub("registry")
    incoming = suite.config.data_dir / "incoming-model-merge"
    incoming.mkdir(parents=True, exist_ok=True)

    def register(name, path):
        return registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_MERGED_MODEL,
                name=name,
                source_path=str(path),
            ),
            timeout=60,
        ).artifact

    fts = [
        register(f"ft-{i}", perturbed(tiny_model_dir, incoming / f"ft{i}", seed=i))
        for i in (1, 2)
    ]
    return fts


def start(suite, **kw):
    params = kw.pop("params", {})
    return (
        suite.stub("merger")
        .StartMergeJob(
            merger_pb2.StartMergeJobRequest(params=struct(params), **kw), timeout=60
        )
        .job
    )


def test_ties_merge_registers_a_model_with_its_inputs_as_lineage(
    suite, base_model, models
):
    fts = models
    job = start(
        suite,
        method="ties",
        input_model_ids=[m.id for m in fts],
        base_model_id=base_model.id,
        output_name="ties-soup",
        params={"density": 0.5, "weights": [1, 2]},
    )
    updates = list(
        suite.stub("merger").WatchMergeJob(
            merger_pb2.WatchMergeJobRequest(job_id=job.status.job_id), timeout=120
        )
    )
    final = updates[-1].job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, final.status.error
    assert final.request.method == "ties"
    assert final.result.tensors_merged == final.result.tensors_total > 0
    registry = suite.stub("registry")
    merged = registry.GetArtifact(
        registry_pb2.GetArtifactRequest(id=final.result.merged_model_id), timeout=30
    ).artifact
    assert merged.metadata["method"] == "ties"
    assert merged.metadata["params"]["density"] == 0.5
    edges = registry.GetLineage(
        registry_pb2.GetLineageRequest(id=merged.id), timeout=30
    ).edges
    relations = {(e.parent_id, e.relation) for e in edges if e.child_id == merged.id}
    assert relations == {
        (fts[0].id, "merge_input"),
        (fts[1].id, "merge_input"),
        (base_model.id, "base_model"),
    }


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"method": "frankenmerge"}, ["unknown merge method", "ties"]),
        ({"method": "ties", "params": {"densty": 0.5}}, ["no parameter densty"]),
        ({"method": "ties", "params": {"density": 1.5}}, ["density must be in (0, 1]"]),
        ({"method": "slerp", "params": {"t": 2}}, ["t must be in [0, 1]"]),
        (
            {"method": "linear", "params": {"weights": [1, 2, 3]}},
            ["3 values but there are 2"],
        ),
        ({"method": "dare_ties", "params": {"density": 0.5, "seed": 0.5}}, ["integer"]),
    ],
)
def test_bad_parameters_are_invalid_and_create_no_job(
    suite, base_model, models, kw, words
):
    fts = models
    merger = suite.stub("merger")
    before = len(
        merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest(), timeout=10).jobs
    )
    with pytest.raises(grpc.RpcError) as err:
        start(
            suite,
            input_model_ids=[m.id for m in fts],
            base_model_id=""
            if kw.get("method") in ("linear", "slerp")
            else base_model.id,
            output_name="bad",
            **kw,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for word in words:
        assert word in err.value.details()
    after = len(
        merger.ListMergeJobs(merger_pb2.ListMergeJobsRequest(), timeout=10).jobs
    )
    assert after == before


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_a_base_the_method_would_ignore_is_refused(suite, base_model, models, method):
    with pytest.raises(grpc.RpcError) as err:
        start(
            suite,
            method=method,
            input_model_ids=[m.id for m in models],
            base_model_id=base_model.id,
            output_name="ignored-base",
            params={"t": 0.5} if method == "slerp" else {},
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not use a base model" in err.value.details()


def test_models_of_another_architecture_are_a_failed_precondition(
    suite, models, tiny_model_factory
):
    fts = models
    gpt2 = (
        suite.stub("registry")
        .RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_BASE_MODEL,
                name="tiny-gpt2-merge-input",
                source_path=str(_copy_in(suite, tiny_model_factory("gpt2"))),
            ),
            timeout=60,
        )
        .artifact
    )
    with pytest.raises(grpc.RpcError) as err:
        start(
            suite,
            method="linear",
            input_model_ids=[fts[0].id, gpt2.id],
            output_name="mixed",
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "lacks tensor" in err.value.details()


def _copy_in(suite, path):
    target = suite.config.data_dir / "incoming-model-merge" / "gpt2"
    if not target.exists():
        shutil.copytree(path, target)
    return target
