"""Two gateway replicas on one PostgreSQL database: each rollout is driven
exactly once, and both route every user to the same arm."""

from __future__ import annotations

import grpc
import pytest

from lorafleet.v1 import gateway_pb2, gateway_pb2_grpc
from tests.common.jobqueue.support import fresh_pg_database, wait_for
from tests.deadlines import stretched_channel
from tests.gateway.rollout_support import RolloutBed, start_replica


@pytest.fixture
def replicas(tmp_path, tiny_model_dir):
    with fresh_pg_database("gateway") as dsn:
        bed = RolloutBed(tmp_path, tiny_model_dir, gateway_dsn=dsn)
        other = start_replica(bed, "gateway-b")
        channel = stretched_channel(other.address)
        try:
            yield bed, gateway_pb2_grpc.GatewayServiceStub(channel)
        finally:
            channel.close()
            other.stop(0.5)
            bed.stop()


def _arms(gateway, deployment: str, keys: list[str]) -> list[str]:
    out = []
    for key in keys:
        try:
            out.append(
                gateway.Generate(
                    gateway_pb2.GenerateRequest(
                        deployment=deployment,
                        params={"prompt": "hi", "max_new_tokens": 2},
                        routing_key=key,
                    ),
                    timeout=30,
                ).arm
            )
        except grpc.RpcError as exc:  # pragma: no cover - would fail below
            out.append(exc.code().name)
    return out


def test_two_replicas_drive_a_rollout_once_and_route_alike(replicas):
    bed, other = replicas
    stable, candidate = bed.version("svc-r"), bed.version("svc-r")
    bed.deploy("replicated", stable)
    rollout = bed.gateway.StartRollout(
        gateway_pb2.StartRolloutRequest(
            deployment="replicated",
            model_id=candidate,
            settings=gateway_pb2.RolloutSettings(
                canary=gateway_pb2.CanarySettings(
                    steps_bps=[3000, 6000], step_interval_s=0.001
                ),
                analysis=gateway_pb2.AnalysisSettings(min_requests=20),
                tick_s=0.02,
            ),
        ),
        timeout=30,
    ).rollout
    wait_for(
        lambda: (
            bed.gateway.GetRollout(
                gateway_pb2.GetRolloutRequest(rollout_id=rollout.id), timeout=10
            ).rollout.candidate_weight_bps
            == 3000
        )
    )
    keys = [f"user-{i}" for i in range(60)]
    # Both replicas read the weights from the registry: same arm per user
    # (each replica's routing cache refreshes within a second; wait for it).
    wait_for(
        lambda: (
            _arms(bed.gateway, "replicated", keys) == _arms(other, "replicated", keys)
        )
    )
    arm = other.GetRollout(
        gateway_pb2.GetRolloutRequest(rollout_id=rollout.id), timeout=10
    ).rollout.candidate.arm
    assert {"stable", arm} == set(_arms(other, "replicated", keys))

    def state():
        return other.GetRollout(
            gateway_pb2.GetRolloutRequest(rollout_id=rollout.id), timeout=10
        ).rollout.state

    while state() == gateway_pb2.ROLLOUT_STATE_PROGRESSING:
        _arms(bed.gateway, "replicated", keys[:10])
        _arms(other, "replicated", keys[10:20])
    assert state() == gateway_pb2.ROLLOUT_STATE_PROMOTED
    events = [
        e.event
        for e in other.WatchRollout(
            gateway_pb2.WatchRolloutRequest(rollout_id=rollout.id), timeout=60
        )
    ]
    kinds = [e.kind for e in events]
    assert kinds.count("started") == 1 and kinds.count("promoted") == 1
    assert [e.candidate_weight_bps for e in events if e.kind == "weight"] == [
        3000,
        6000,
    ]
