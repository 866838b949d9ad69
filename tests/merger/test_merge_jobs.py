"""The merge job runner with a fake registry: cancellation and lineage rules."""

from __future__ import annotations

import shutil

import pytest

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.config import load_config
from services.common.convert import struct
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.jobqueue import open_store
from services.common.jobs import JobState
from services.merger import jobs as merge_jobs
from services.merger.jobs import Merger, MergeRequest, check_lineage
from tests.common.jobqueue.support import wait_for
from tests.merger.helpers import make_adapter


class FakeRegistry:
    """GetArtifact from a dict; RegisterArtifact only records the request."""

    def __init__(self, artifacts: list[common_pb2.Artifact]) -> None:
        self.artifacts = {a.id: a for a in artifacts}
        self.registered: list[registry_pb2.RegisterArtifactRequest] = []

    def GetArtifact(self, request):
        if request.id not in self.artifacts:
            raise NotFound(f"no artifact {request.id}")
        return registry_pb2.GetArtifactResponse(artifact=self.artifacts[request.id])

    def RegisterArtifact(self, request):
        self.registered.append(request)
        return registry_pb2.RegisterArtifactResponse(
            artifact=common_pb2.Artifact(id="merged-1", name=request.name, version=1)
        )

    def ListArtifacts(self, request):
        return registry_pb2.ListArtifactsResponse()  # no earlier attempt registered


def _artifact(id_: str, kind: int, path, digest: str, **meta) -> common_pb2.Artifact:
    return common_pb2.Artifact(
        id=id_,
        kind=kind,
        name=id_,
        version=1,
        digest=digest,
        local_path=str(path),
        metadata=struct(meta),
    )


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    make_adapter(tiny_model_dir, tmp_path / "adapter")
    registry = FakeRegistry(
        [
            _artifact(
                "base", common_pb2.ARTIFACT_KIND_BASE_MODEL, tiny_model_dir, "sha256:b"
            ),
            _artifact(
                "lora",
                common_pb2.ARTIFACT_KIND_ADAPTER,
                tmp_path / "adapter",
                "sha256:a",
                base_model_id="base",
                base_model_digest="sha256:b",
            ),
            _artifact(
                "orphan",
                common_pb2.ARTIFACT_KIND_ADAPTER,
                tmp_path / "adapter",
                "sha256:o",
            ),
        ]
    )
    config = load_config(env={}, auth_mode="disabled", data_dir=tmp_path / "data")
    store = open_store(config, "merger")
    merger = Merger(config, registry, store)
    yield merger, registry, config
    merger.engine.shutdown()
    store.engine.dispose()


def _wait(merger: Merger, job_id: str):
    wait_for(lambda: merger.engine.get(job_id).state.terminal)
    return merger.engine.get(job_id)


def _events(merger: Merger, job_id: str) -> list:
    return [event for event, _ in merger.engine.watch(job_id)]


def test_cancel_mid_merge_cleans_up_and_registers_nothing(setup, monkeypatch):
    merger, registry, config = setup
    real = merge_jobs.execute_merge

    def cancelling(plan, out_dir, *, on_tensor, **kw):
        def hook(done, total, name):
            if done == 3:
                merger.engine.cancel(job.id)
            on_tensor(done, total, name)

        return real(plan, out_dir, on_tensor=hook, **kw)

    monkeypatch.setattr(merge_jobs, "execute_merge", cancelling)
    job = merger.start(MergeRequest(adapter_id="lora", output_name="m"))
    finished = _wait(merger, job.id)
    assert finished.state == JobState.CANCELLED
    assert registry.registered == []
    assert not any(config.staging_dir.iterdir())
    assert max(e.progress for e in _events(merger, job.id)) < 0.5


def test_successful_run_registers_with_parents_and_cleans_staging(setup):
    merger, registry, config = setup
    job = _wait(
        merger,
        merger.start(
            MergeRequest(adapter_id="lora", output_name="m", tags={"k": "v"})
        ).id,
    )
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert job.result.merged_model_id == "merged-1"
    (request,) = registry.registered
    assert request.kind == common_pb2.ARTIFACT_KIND_MERGED_MODEL
    assert [(p.artifact_id, p.relation) for p in request.parents] == [
        ("lora", "adapter"),
        ("base", "base_model"),
    ]
    assert request.source_path.startswith(str(config.staging_dir.resolve()))
    assert dict(request.tags) == {"k": "v"}
    assert not any(config.staging_dir.iterdir())
    events = _events(merger, job.id)
    merge_events = [e for e in events if e.stage == "merge" and e.total_steps]
    assert 1 <= len(merge_events) <= merge_jobs.PROGRESS_EVENTS + 1


def test_an_orphan_adapter_is_refused_with_or_without_a_base_id(setup):
    """An adapter recording no base: nothing says which weights it fits, so a
    base given by hand is refused too (the rule the validator and inference
    share), with the way to record one."""
    merger, _, _ = setup
    with pytest.raises(InvalidArgument, match="base_model_id"):
        merger.start(MergeRequest(adapter_id="orphan", output_name="m"))
    with pytest.raises(FailedPrecondition, match="records no base model") as err:
        merger.start(
            MergeRequest(adapter_id="orphan", output_name="m", base_model_id="base")
        )
    assert "--base" in err.value.message


def test_lineage_compares_digest_before_id(tmp_path):
    adapter = _artifact(
        "lora",
        common_pb2.ARTIFACT_KIND_ADAPTER,
        tmp_path,
        "sha256:a",
        base_model_id="base",
        base_model_digest="sha256:b",
    )
    same_weights = _artifact(
        "copy", common_pb2.ARTIFACT_KIND_BASE_MODEL, tmp_path, "sha256:b"
    )
    check_lineage(adapter, same_weights)  # re-registered copy of the same weights
    other = _artifact("base", common_pb2.ARTIFACT_KIND_BASE_MODEL, tmp_path, "sha256:x")
    with pytest.raises(FailedPrecondition, match="was trained on base base"):
        check_lineage(adapter, other)


def test_request_check_refuses_bad_fields():
    with pytest.raises(InvalidArgument, match="adapter_id"):
        MergeRequest(adapter_id="", output_name="m").check()
    with pytest.raises(InvalidArgument, match="output_name"):
        MergeRequest(adapter_id="a", output_name="-bad").check()
    with pytest.raises(InvalidArgument, match="output_dtype"):
        MergeRequest(adapter_id="a", output_name="m", output_dtype="int4").check()
    MergeRequest(adapter_id="a", output_name="m", output_dtype="bfloat16").check()


def test_staging_survives_nothing_when_registry_fails(setup):
    merger, registry, config = setup

    def refuse(request):
        raise InvalidArgument("source_path is outside the allowed roots")

    registry.RegisterArtifact = refuse
    job = _wait(
        merger, merger.start(MergeRequest(adapter_id="lora", output_name="m")).id
    )
    assert job.state == JobState.FAILED and job.error_code == "INVALID_ARGUMENT"
    assert not any(config.staging_dir.iterdir())
    shutil.rmtree(config.data_dir)
