"""Huge request values across the services: echoed shortened, never whole.

A caller's 10,000-character id or name comes back in the error message cut to
about 80 characters with an ellipsis, with the status that names the problem.
"""

from __future__ import annotations

import grpc
import pytest

from lorafleet.v1 import (
    common_pb2,
    inference_pb2,
    merger_pb2,
    registry_pb2,
    trainer_pb2,
)
from services.common.convert import struct

HUGE = "x" * 10_000


@pytest.mark.parametrize(
    "service, call, code, words",
    [
        (
            "trainer",
            lambda s, base: s.StartTrainJob(
                trainer_pb2.StartTrainJobRequest(
                    base_model_id=base.id, dataset_id="d", adapter_name=HUGE
                ),
                timeout=30,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["adapter_name 'xxx", "…' must match"],
        ),
        (
            "trainer",
            lambda s, base: s.StartTrainJob(
                trainer_pb2.StartTrainJobRequest(
                    base_model_id=base.id,
                    dataset_id="d",
                    adapter_name="ok",
                    config=common_pb2.TrainConfig(target_modules=[HUGE + "!"]),
                ),
                timeout=30,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["target_modules entry 'xxx", "is not a module name"],
        ),
        (
            "merger",
            lambda s, base: s.StartMergeJob(
                merger_pb2.StartMergeJobRequest(
                    method=HUGE, input_model_ids=[base.id, base.id], output_name="m"
                ),
                timeout=30,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["unknown merge method 'xxx", "valid methods: breadcrumbs"],
        ),
        (
            "merger",
            lambda s, base: s.StartMergeJob(
                merger_pb2.StartMergeJobRequest(
                    method="linear",
                    input_model_ids=[base.id, base.id],
                    output_name="m",
                    params=struct({HUGE: 1}),
                ),
                timeout=30,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["has no parameter xxx", "valid parameters: weights"],
        ),
        (
            "inference",
            lambda s, base: s.UnloadModel(
                inference_pb2.UnloadModelRequest(model_id=HUGE), timeout=30
            ),
            grpc.StatusCode.NOT_FOUND,
            ["model 'xxx", "…' is not loaded"],
        ),
        (
            "registry",
            lambda s, base: s.RegisterArtifact(
                registry_pb2.RegisterArtifactRequest(
                    kind=common_pb2.ARTIFACT_KIND_DATASET,
                    name="d",
                    source_path=str(base.local_path) + "/" + HUGE,
                ),
                timeout=30,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            ["source_path '", "is not a usable path"],
        ),
    ],
    ids=[
        "adapter_name",
        "target_modules",
        "merge-method",
        "merge-param",
        "model_id",
        "source_path",
    ],
)
def test_huge_values_are_echoed_shortened(
    suite, base_model, service, call, code, words
):
    with pytest.raises(grpc.RpcError) as err:
        call(suite.stub(service), base_model)
    details = err.value.details()
    assert err.value.code() == code, details
    for word in words:
        assert word in details, details
    assert "…" in details and "x" * 100 not in details
    assert len(details) < 1000, len(details)
