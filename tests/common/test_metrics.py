"""What the services record as OpenTelemetry metrics, read from the test
process's in-memory reader (tests/conftest.py). The Prometheus endpoints
of real processes: tests/test_local_suite.py."""

from __future__ import annotations

import os

import grpc
import pytest

from lorafleet.v1 import common_pb2, gateway_pb2, trainer_pb2
from services.common.config import load_config
from services.inference.adapters import AdapterCache, AdapterSlot


def points(reader, name: str) -> list:
    """Every data point of the metric `name` collected so far."""
    found = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += list(metric.data.data_points)
    return found


def where(found: list, **attributes) -> list:
    wanted = {k.replace("__", "."): v for k, v in attributes.items()}
    return [
        p for p in found if all(p.attributes.get(k) == v for k, v in wanted.items())
    ]


def test_rpcs_are_timed_by_method_and_status(suite, workflow, metric_reader):
    durations = points(metric_reader, "rpc.server.call.duration")
    run = where(
        durations,
        rpc__method="lorafleet.v1.GatewayService/RunWorkflow",
        rpc__response__status_code="OK",
        rpc__system__name="grpc",
    )
    assert run and run[0].count >= 1 and run[0].sum > 0
    # The gateway's calls to the others are measured where they are served.
    assert where(durations, rpc__method="lorafleet.v1.TrainerService/StartTrainJob")
    # A refused call is counted under its status code.
    with pytest.raises(grpc.RpcError):
        suite.stub("trainer").GetTrainJob(
            trainer_pb2.GetTrainJobRequest(job_id="train-nope"), timeout=30
        )
    failed = where(
        points(metric_reader, "rpc.server.call.duration"),
        rpc__method="lorafleet.v1.TrainerService/GetTrainJob",
        rpc__response__status_code="NOT_FOUND",
    )
    assert failed and failed[0].count >= 1
    # Health probes are left out.
    assert not [p for p in durations if "grpc.health" in p.attributes["rpc.method"]]


def test_jobs_report_duration_outcome_and_queue_depth(workflow, metric_reader):
    durations = points(metric_reader, "lorafleet.job.duration")
    for kind in ("train", "merge", "validate", "workflow"):
        ended = where(
            durations, lorafleet__job__kind=kind, lorafleet__job__outcome="succeeded"
        )
        seen = sorted(
            (p.attributes["lorafleet.job.kind"], p.attributes["lorafleet.job.outcome"])
            for p in durations
        )
        assert ended and ended[0].count >= 1, (kind, seen)
    depths = points(metric_reader, "lorafleet.job.queue.depth")
    kinds = {p.attributes["lorafleet.job.kind"] for p in depths}
    assert {"train", "merge", "validate", "workflow"} <= kinds
    assert {p.attributes["lorafleet.job.state"] for p in depths} == {
        "queued",
        "running",
    }
    assert all(p.value >= 0 for p in depths)


def test_training_reports_loss_throughput_and_step(workflow, metric_reader):
    train_job = workflow[1][-1].job.train_job_id
    job = {"lorafleet__job__id": train_job}
    steps = where(points(metric_reader, "lorafleet.training.step"), **job)
    assert steps and steps[0].value >= 1
    losses = where(points(metric_reader, "lorafleet.training.loss"), **job)
    assert losses and all(p.value > 0 for p in losses)
    assert where(points(metric_reader, "lorafleet.training.throughput"), **job)


def test_routed_requests_report_tokens_ttft_and_per_arm_series(
    suite, workflow, metric_reader
):
    params = common_pb2.GenerationParams(
        prompt="Order for Li: 1 lamp.", max_new_tokens=4
    )
    reply = suite.stub("gateway").Generate(
        gateway_pb2.GenerateRequest(deployment="orders", params=params), timeout=60
    )
    arm = {"lorafleet__deployment": "orders", "lorafleet__arm": reply.arm}
    served = where(
        points(metric_reader, "lorafleet.deployment.requests"),
        rpc__response__status_code="OK",
        **arm,
    )
    assert served and served[0].value >= 1
    latency = where(
        points(metric_reader, "lorafleet.deployment.request.duration"), **arm
    )
    assert latency and latency[0].count >= 1
    completion = where(
        points(metric_reader, "lorafleet.inference.tokens"),
        lorafleet__token__type="completion",
    )
    assert sum(p.value for p in completion) >= reply.output.completion_tokens
    assert points(metric_reader, "lorafleet.inference.time_to_first_token")
    occupancy = points(metric_reader, "lorafleet.inference.batch.occupancy")
    assert occupancy and all(0 < p.max <= 1 for p in occupancy)


def test_adapter_cache_hits_misses_and_bytes(metric_reader):
    def count(result: str) -> float:
        found = where(
            points(metric_reader, "lorafleet.inference.adapter_cache.requests"),
            lorafleet__cache__result=result,
        )
        return sum(p.value for p in found)

    hits, misses = count("hit"), count("miss")
    cache = AdapterCache(1000)
    cache.add(AdapterSlot("m", "d1", "n1", 300))
    cache.acquire("m", "d1", "a1", hit=False)
    cache.acquire("m", "d1", "a1")
    cache.acquire("m", "d1", "a1")
    assert (count("hit") - hits, count("miss") - misses) == (2, 1)
    measures = {
        p.attributes["lorafleet.cache.measure"]: p.value
        for p in points(metric_reader, "lorafleet.inference.adapter_cache.bytes")
    }
    assert measures.get("budget", 0) >= 1000 and measures.get("loaded", 0) >= 300


def test_resource_attributes_name_the_service():
    from services.common.metrics import service_resource

    config = load_config(env={"LORAFLEET_WORKER_ID": "host-1-gateway-50050"})
    attributes = service_resource("gateway", config).attributes
    assert attributes["service.name"] == "lorafleet-gateway"
    assert attributes["service.namespace"] == "lorafleet"
    assert attributes["service.instance.id"] == "host-1-gateway-50050"
    assert attributes["service.version"]
    # A helper process (the trainer's child) is named too, never refused.
    child = service_resource("trainer-child", load_config(env={})).attributes
    assert child["service.name"] == "lorafleet-trainer-child"
    assert child["service.instance.id"].endswith(f"-trainer-child-{os.getpid()}")
