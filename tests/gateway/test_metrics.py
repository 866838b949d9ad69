"""Per-arm metrics in the gateway database, online quality checks, and shadow
traffic that never makes a caller wait."""

from __future__ import annotations

import threading
from contextlib import ExitStack

import grpc
import pytest

from lorafleet.v1 import common_pb2, gateway_pb2, inference_pb2, registry_pb2
from services.common.database import Transactions
from services.common.errors import Unavailable
from services.common.jobqueue import make_engine
from services.gateway.arms import Arm
from services.gateway.metrics import MetricsRecorder
from services.gateway.quality import check_output
from services.gateway.shadow import Mirror
from services.gateway.state.migrations import upgrade_database
from services.gateway.state.tables import ArmMetricsRow
from tests.common.jobqueue.support import BACKENDS, fresh_pg_database, wait_for


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def gateway_db(request, tmp_path):
    with ExitStack() as stack:
        if request.param == "sqlite":
            dsn = f"sqlite:///{tmp_path / 'gateway.db'}"
        else:
            dsn = stack.enter_context(fresh_pg_database("gateway"))
        upgrade_database(dsn)
        engine = make_engine(dsn)
        stack.callback(engine.dispose)
        yield Transactions(engine, what="the gateway database")


def recorder(db, replica: str, clock: Clock) -> MetricsRecorder:
    return MetricsRecorder(db, replica, window_s=10, clock=clock, start=False)


def test_replicas_counts_sum_per_arm_and_window(gateway_db):
    clock = Clock()
    a, b = recorder(gateway_db, "gw-a", clock), recorder(gateway_db, "gw-b", clock)
    quality = check_output('{"ok": 1}', "json", [])
    for latency in (10.0, 20.0, 30.0, 400.0):
        a.record("d", "stable", latency_ms=latency, tokens=3, quality=quality)
    a.record("d", "stable", error_code="UNAVAILABLE")
    b.record("d", "canary", latency_ms=5000.0, quality=check_output("oops", "json", []))
    b.record("d", "canary", error_code="INTERNAL")
    clock.now += 25  # later windows count too
    b.record("d", "stable", latency_ms=15.0)
    a.flush()
    b.flush()
    totals = a.totals("d", window_s=60)
    stable, canary = totals["stable"], totals["canary"]
    assert (stable.requests, stable.successes, dict(stable.errors)) == (
        6,
        5,
        {"UNAVAILABLE": 1},
    )
    assert stable.completion_tokens == 12 and stable.invalid_json == 0
    assert 10 < stable.percentile_ms(0.5) <= 35  # the middle of 10/15/20/30/400
    assert stable.percentile_ms(0.99) > 300
    assert (canary.requests, dict(canary.errors), canary.invalid_json) == (
        2,
        {"INTERNAL": 1},
        1,
    )
    # Only the window asked for: the first 25 s are out of a 10 s look-back.
    assert a.totals("d", window_s=10)["stable"].requests == 1


def test_a_replica_rewrites_only_its_own_rows(gateway_db):
    clock = Clock()
    a = recorder(gateway_db, "gw-a", clock)
    a.record("d", "stable", latency_ms=1.0)
    a.flush()
    a.record("d", "stable", latency_ms=1.0)
    a.flush()  # the same window: replaced, not added again
    rows = gateway_db.read(lambda s: s.query(ArmMetricsRow).all())
    assert [(r.replica, r.requests) for r in rows] == [("gw-a", 2)]
    assert a.totals("d", 60)["stable"].requests == 2


def test_quality_checks():
    assert check_output("  ", "", []).empty
    assert not check_output('{"a": 1}', "json", []).invalid_json
    assert check_output("{'a': 1}", "json", []).invalid_json
    assert not check_output("{'a': 1}", "", []).invalid_json
    assert check_output("As an AI model I cannot", "", ["as an ai"]).blocked
    assert check_output("hello", "", []).chars == 5


class SlowInference:
    """An inference client whose Generate waits until released."""

    def __init__(self, text: str = "same") -> None:
        self.release = threading.Event()
        self.calls = 0
        self.text = text

    def Generate(self, request):
        self.calls += 1
        self.release.wait(60)
        if request.model_id == "broken":
            raise Unavailable("inference is unavailable")
        return inference_pb2.InferenceServiceGenerateResponse(
            output=common_pb2.GenerationOutput(text=self.text, completion_tokens=1)
        )


def shadow_arm(model_id: str = "m-shadow", mirror_bps: int = 10_000) -> Arm:
    return Arm("shadow", model_id, "", "", 0, common_pb2.TARGET_ROLE_SHADOW, mirror_bps)


def test_shadow_copies_never_make_the_caller_wait(gateway_db):
    clock = Clock()
    metrics = recorder(gateway_db, "gw", clock)
    inference = SlowInference(text="same")
    mirror = Mirror(inference, metrics, workers=1, queue_size=2)
    params = common_pb2.GenerationParams(prompt="p")
    # The shadow is stuck (not released): mirroring still returns at once.
    mirror.mirror("d", [shadow_arm()], params, "same")
    wait_for(lambda: inference.calls == 1)  # the one worker holds it
    mirror.mirror("d", [shadow_arm()], params, "same")
    mirror.mirror("d", [shadow_arm()], params, "different")
    mirror.mirror("d", [shadow_arm()], params, "same")  # the queue (2) is full
    assert metrics.totals("d", 60)["shadow"].shadow_dropped == 1
    inference.release.set()
    wait_for(lambda: metrics.totals("d", 60)["shadow"].requests == 3)
    shadow = metrics.totals("d", 60)["shadow"]
    assert shadow.shadow and shadow.agreements == 2  # two copies of "same"
    mirror.close()


def test_shadow_errors_are_counted_and_zero_share_mirrors_nothing(gateway_db):
    metrics = recorder(gateway_db, "gw", Clock())
    inference = SlowInference()
    inference.release.set()
    mirror = Mirror(inference, metrics, workers=1)
    params = common_pb2.GenerationParams(prompt="p")
    mirror.mirror("d", [shadow_arm("broken")], params, "x")
    wait_for(lambda: metrics.totals("d", 60).get("shadow") is not None)
    assert dict(metrics.totals("d", 60)["shadow"].errors) == {"UNAVAILABLE": 1}
    mirror.mirror("d", [shadow_arm(mirror_bps=0)], params, "x")
    mirror.close()
    assert inference.calls == 1


# --- over gRPC ----------------------------------------------------------------


def test_metrics_and_shadow_over_grpc(suite, workflow, base_model):
    merged = workflow[1][-1].job.result.merged_model_id
    registry, gateway = suite.stub("registry"), suite.stub("gateway")
    registry.PutDeployment(
        registry_pb2.PutDeploymentRequest(
            name="metrics-shadow",
            targets=[
                common_pb2.DeploymentTarget(
                    model_id=base_model.id,
                    arm="stable",
                    weight_bps=10_000,
                    role=common_pb2.TARGET_ROLE_STABLE,
                ),
                common_pb2.DeploymentTarget(
                    model_id=merged,
                    arm="shadow",
                    role=common_pb2.TARGET_ROLE_SHADOW,
                    mirror_bps=10_000,
                ),
            ],
            output_format="json",
            blocked_phrases=["zzz-never"],
        ),
        timeout=30,
    )
    params = common_pb2.GenerationParams(prompt="Order for Ana", max_new_tokens=2)
    for _ in range(3):
        reply = gateway.Generate(
            gateway_pb2.GenerateRequest(deployment="metrics-shadow", params=params),
            timeout=120,
        )
        assert reply.arm == "stable"  # a shadow never answers

    def arms() -> dict:
        response = gateway.GetDeploymentMetrics(
            gateway_pb2.GetDeploymentMetricsRequest(deployment="metrics-shadow"),
            timeout=30,
        )
        assert response.window_s == 300
        return {a.arm: a for a in response.arms}

    wait_for(lambda: arms()["shadow"].requests == 3, timeout_s=300)
    got = arms()
    stable, shadow = got["stable"], got["shadow"]
    assert (stable.requests, stable.shadow, shadow.shadow) == (3, False, True)
    assert stable.latency_p50_ms > 0 and stable.completion_tokens >= 3
    # Two tokens of a tiny model are not JSON: the online check counts them.
    assert stable.invalid_json == 3 and stable.blocked_outputs == 0
    assert 0 <= shadow.agreements <= 3
    with pytest.raises(grpc.RpcError) as err:
        gateway.GetDeploymentMetrics(
            gateway_pb2.GetDeploymentMetricsRequest(deployment="no-such"), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        gateway.GetDeploymentMetrics(
            gateway_pb2.GetDeploymentMetricsRequest(
                deployment="metrics-shadow", window_s=100_000
            ),
            timeout=30,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
