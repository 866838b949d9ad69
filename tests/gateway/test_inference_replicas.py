"""Two real inference replicas behind the gateway: each adapter is served, and
loaded, only by its favourite replica; when one replica stops, its adapters
move to the other and the other's stay where they are.

Real services in process (registry, two inference, gateway), a tiny model,
real gRPC; nothing waits on the wall clock.
"""

from __future__ import annotations

import importlib

import pytest

from lorafleet.v1 import (
    gateway_pb2,
    inference_pb2,
    inference_pb2_grpc,
)
from services.cli.models import import_model
from services.gateway.replicas import ReplicaChooser
from tests.deadlines import stretched_channel
from tests.inference.helpers import register_random_adapter
from tests.suite import start_suite

ADAPTERS = 5


@pytest.fixture(scope="module")
def bed(tmp_path_factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("replicas")
    suite = start_suite(data)
    second = importlib.import_module("services.inference.server").create(
        suite.config, port=0
    )
    replicas = [suite.address("inference"), second.address]
    # The gateway again, now routing across both replicas.
    suite.stop_service("gateway")
    suite.start_service("gateway", inference_replicas=replicas)
    registry = suite.stub("registry")
    base = import_model(
        tiny_model_dir, "tiny-replicas", suite.config.staging_dir, registry
    )
    adapters = [
        register_random_adapter(
            registry,
            tiny_model_dir,
            base,
            suite.config.staging_dir / f"adapter-{seed}",
            f"tiny-replicas-lora-{seed}",
            seed,
        ).id
        for seed in range(ADAPTERS)
    ]
    channels = {a: stretched_channel(a) for a in replicas}
    stubs = {a: inference_pb2_grpc.InferenceServiceStub(c) for a, c in channels.items()}
    servers = {replicas[0]: suite.servers["inference"], replicas[1]: second}
    yield suite, base, adapters, stubs, servers
    for channel in channels.values():
        channel.close()
    second.stop(0.5)
    suite.stop()


def loaded_adapters(stub) -> set[str]:
    models = stub.ListLoadedModels(
        inference_pb2.ListLoadedModelsRequest(), timeout=60
    ).models
    return {a for m in models for a in m.adapter_ids}


def generate(gateway, deployment: str) -> str:
    return gateway.Generate(
        gateway_pb2.GenerateRequest(
            deployment=deployment,
            params={"prompt": "Order for Ana", "max_new_tokens": 4},
        ),
        timeout=120,
    ).output.text


def test_adapters_stay_on_their_replica_and_only_the_lost_ones_move(bed):
    suite, base, adapters, stubs, servers = bed
    gateway = suite.stub("gateway")
    replicas = list(stubs)
    ranking = {a: ReplicaChooser(replicas).rank(f"{base.id}/{a}") for a in adapters}
    for i in range(ADAPTERS):
        # Deploy loads the adapter on its replica before any traffic; by
        # name here, while requests are routed by id: the same replica.
        gateway.Deploy(
            gateway_pb2.DeployRequest(
                deployment=f"rep-{i}",
                model_id="tiny-replicas",
                adapter_id=f"tiny-replicas-lora-{i}",
            ),
            timeout=120,
        )
        held = {r: loaded_adapters(stubs[r]) for r in replicas}
        assert adapters[i] in held[ranking[adapters[i]][0]]
    first = {a: generate(gateway, f"rep-{i}") for i, a in enumerate(adapters)}
    held = {r: loaded_adapters(stubs[r]) for r in replicas}
    for adapter in adapters:
        assert [r for r in replicas if adapter in held[r]] == [ranking[adapter][0]]

    # The replica holding adapter 0 stops; every deployment still answers,
    # with the same greedy text, and only that replica's adapters moved.
    lost = ranking[adapters[0]][0]
    (kept,) = [r for r in replicas if r != lost]
    servers[lost].stop(0.5)
    again = {a: generate(gateway, f"rep-{i}") for i, a in enumerate(adapters)}
    assert again == first
    now = loaded_adapters(stubs[kept])
    moved = {a for a in adapters if ranking[a][0] == lost}
    assert adapters[0] in moved and moved <= now
    assert held[kept] <= now  # the others never left
    assert now == held[kept] | moved
