"""The gateway's inference pool over real gRPC: three fake inference replicas,
each request keyed by (model, adapter). Affinity, a replica dropping out,
bounded load, failover on a full queue, and streams.

The cooldown runs on an injected clock; concurrency waits on the fakes' own
counters (events), never on elapsed time.
"""

from __future__ import annotations

import time
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest

from lorafleet.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from services.common.clients import ServiceClient
from services.common.config import ConfigError, load_config
from services.common.errors import Unavailable
from services.gateway.inference_pool import InferencePool, RefResolver
from services.gateway.replicas import ReplicaChooser
from tests.common.jobqueue.support import wait_for
from tests.gateway.rollout_support import Behaviour, FakeInference

GUARD_S = 60.0
KEYS = [f"adapter-{i}" for i in range(48)]


@dataclass
class Replica:
    fake: FakeInference
    server: grpc.Server
    address: str


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def start_replica() -> Replica:
    fake = FakeInference()
    server = grpc.server(futures.ThreadPoolExecutor(32))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return Replica(fake, server, f"127.0.0.1:{port}")


@pytest.fixture
def replicas():
    started = [start_replica() for _ in range(3)]
    yield started
    for replica in started:
        replica.server.stop(0)


@pytest.fixture
def pool_of():
    """Builds pools over real gRPC clients; closes them after the test."""
    made: list[InferencePool] = []

    def make(replicas, clock=None, min_bound=8) -> InferencePool:
        config = load_config(env={}, rpc_timeout_s=30)
        clients = {
            r.address: ServiceClient("inference", config, address=r.address)
            for r in replicas
        }
        made.append(
            InferencePool(
                clients,
                cooldown_s=5.0,
                min_bound=min_bound,
                clock=clock or time.monotonic,
            )
        )
        return made[-1]

    yield make
    for pool in made:
        pool.close()


def ask(adapter: str, model: str = "base-1"):
    return inference_pb2.InferenceServiceGenerateRequest(
        model_id=model,
        adapter_id=adapter,
        params=common_pb2.GenerationParams(prompt="hi", max_new_tokens=2),
    )


def served_by(replicas) -> dict[str, str]:
    """adapter -> address of the one replica that served it (asserts one)."""
    where: dict[str, str] = {}
    for replica in replicas:
        for adapter in replica.fake.calls:
            assert adapter not in where, f"{adapter} served by two replicas"
            where[adapter] = replica.address
    return where


def favourite(replicas, adapter: str, model: str = "base-1") -> str:
    ranking = ReplicaChooser([r.address for r in replicas]).rank(f"{model}/{adapter}")
    return ranking[0]


def test_each_adapter_sticks_to_its_favourite_replica(replicas, pool_of):
    pool = pool_of(replicas)
    for _ in range(3):
        for adapter in KEYS:
            assert pool.Generate(ask(adapter)).output.text == '{"ok": true}'
    where = served_by(replicas)  # and never by two
    assert where == {a: favourite(replicas, a) for a in KEYS}
    # Spread over all three, each adapter's calls all on one replica.
    assert len(set(where.values())) == 3
    assert all(r.fake.calls[a] == 3 for r in replicas for a in r.fake.calls)
    assert sum(pool.in_flight().values()) == 0


def test_a_replica_dropping_out_moves_only_its_own_adapters(replicas, pool_of):
    clock = Clock()
    pool = pool_of(replicas, clock)
    for adapter in KEYS:
        pool.Generate(ask(adapter))
    before = served_by(replicas)
    gone = replicas[2]
    gone.server.stop(0).wait(30)  # gone for good: new calls get UNAVAILABLE
    for replica in replicas:
        replica.fake.calls.clear()
    for adapter in KEYS:  # every call still answered
        assert pool.Generate(ask(adapter)).output.text == '{"ok": true}'
    after = served_by(replicas)
    moved = {a for a in KEYS if after[a] != before[a]}
    assert moved == {a for a in KEYS if before[a] == gone.address} != set()
    # Each moved adapter went to its second choice, and stays there.
    chooser = ReplicaChooser([r.address for r in replicas])
    assert all(after[a] == chooser.rank(f"base-1/{a}")[1] for a in moved)
    assert gone.address not in pool.live()
    # After the cooldown one request tries it again (half-open).
    clock.now += 5.0
    assert gone.address in pool.live()
    pool.Generate(ask(sorted(moved)[0]))
    assert gone.address not in pool.live()


def test_a_hot_adapter_spills_over_within_the_load_bound(replicas, pool_of):
    pool = pool_of(replicas, min_bound=4)
    hot = "adapter-hot"
    for replica in replicas:
        replica.fake.behaviours[hot] = Behaviour(delay_s=GUARD_S)
        replica.fake.release.clear()
    ranking = ReplicaChooser([r.address for r in replicas]).rank(f"base-1/{hot}")
    by_address = {r.address: r for r in replicas}
    with futures.ThreadPoolExecutor(12) as threads:
        calls = [threads.submit(pool.Generate, ask(hot)) for _ in range(12)]
        # Every one of the 12 is in flight.
        wait_for(lambda: sum(r.fake.calls.get(hot, 0) for r in replicas) == 12)
        held = {a: by_address[a].fake.calls.get(hot, 0) for a in ranking}
        assert pool.in_flight() == held
        for replica in replicas:
            replica.fake.release.set()
        assert all(c.result(timeout=GUARD_S).output.text for c in calls)
    # A batch's worth (4) stays home, then max(4, ceil(1.25 x 12 / 3)) = 5
    # per replica: the favourite fills first, the rest spill in order.
    assert held[ranking[0]] == 5 and held[ranking[1]] == 5
    assert held[ranking[2]] == 2
    assert sum(pool.in_flight().values()) == 0


def test_a_full_replica_sends_the_request_to_the_next_one(replicas, pool_of):
    pool = pool_of(replicas)
    adapter = "adapter-7"
    home = favourite(replicas, adapter)
    full = next(r for r in replicas if r.address == home)
    full.fake.behaviours[adapter] = Behaviour(refuse=grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert pool.Generate(ask(adapter)).output.text == '{"ok": true}'
    assert full.fake.calls[adapter] == 1  # tried home first
    assert sum(r.fake.calls.get(adapter, 0) for r in replicas) == 2
    assert home in pool.live()  # full is not down


def test_when_every_replica_is_gone_the_caller_gets_unavailable(replicas, pool_of):
    pool = pool_of(replicas)
    for replica in replicas:
        replica.server.stop(0)
    with pytest.raises(Unavailable) as caught:
        pool.Generate(ask("adapter-1"))
    assert "is it running?" in caught.value.message
    # Still tries every replica next time rather than none.
    assert sorted(pool.live()) == sorted(r.address for r in replicas)


def test_streams_follow_affinity_and_fail_over_before_any_output(replicas, pool_of):
    pool = pool_of(replicas)
    adapter = "adapter-3"
    home = favourite(replicas, adapter)
    by_address = {r.address: r for r in replicas}
    for replica in replicas:
        replica.fake.behaviours[adapter] = Behaviour(text="one two three")
    chunks = list(pool.GenerateStream(ask(adapter)))
    assert "".join(c.chunk.text_delta for c in chunks) == "one two three"
    assert served_by(replicas) == {adapter: home}
    by_address[home].server.stop(0).wait(30)  # not mid-shutdown (CANCELLED)
    by_address[home].fake.calls.clear()
    chunks = list(pool.GenerateStream(ask(adapter)))
    assert "".join(c.chunk.text_delta for c in chunks) == "one two three"
    assert served_by(replicas)[adapter] != home
    assert sum(pool.in_flight().values()) == 0


def test_a_stream_abandoned_by_its_reader_frees_its_slot(replicas, pool_of):
    pool = pool_of(replicas)
    adapter = "adapter-4"
    for replica in replicas:
        replica.fake.behaviours[adapter] = Behaviour(text="a b c d e f")
    stream = pool.GenerateStream(ask(adapter))
    next(stream)
    assert sum(pool.in_flight().values()) == 1
    stream.close()
    assert sum(pool.in_flight().values()) == 0


def test_load_model_loads_on_the_favourite_only(replicas, pool_of):
    pool = pool_of(replicas)
    for adapter in KEYS[:12]:
        pool.LoadModel(
            inference_pb2.LoadModelRequest(model_id="base-1", adapter_id=adapter)
        )
    loaded = {r.address: set(r.fake.loaded) for r in replicas}
    for adapter in KEYS[:12]:
        holders = [a for a, names in loaded.items() if adapter in names]
        assert holders == [favourite(replicas, adapter)]


def test_replicas_come_from_configuration():
    config = load_config(
        env={"LORAFLEET_INFERENCE_REPLICAS": "inference-1:50055, inference-2:50055"}
    )
    assert config.inference_addresses() == ["inference-1:50055", "inference-2:50055"]
    # Round-trips through a child process's environment.
    again = load_config(env=config.as_env())
    assert again.inference_addresses() == config.inference_addresses()
    # Unset: the single inference_address.
    assert load_config(env={}).inference_addresses() == ["127.0.0.1:50055"]
    with pytest.raises(ConfigError, match="not host:port"):
        load_config(
            env={"LORAFLEET_INFERENCE_REPLICAS": "inference-1"}
        ).inference_addresses()


def test_one_replica_behaves_as_a_plain_client(replicas, pool_of):
    """The rollout analysis counts errors per arm: with one replica a
    failure comes back as it happened, not retried away."""
    pool = pool_of(replicas[:1])
    replicas[0].fake.behaviours["flaky"] = Behaviour(error_every=1)
    with pytest.raises(Unavailable, match="injected fault"):
        pool.Generate(ask("flaky"))
    assert replicas[0].fake.calls["flaky"] == 1
    assert pool.Generate(ask("steady")).output.text == '{"ok": true}'


class FakeRegistry:
    def __init__(self, names: dict[str, str]) -> None:
        self.names, self.asked = names, []

    def GetArtifact(self, request):
        from types import SimpleNamespace

        from services.common.errors import NotFound

        self.asked.append(request.id)
        if request.id not in self.names:
            raise NotFound(f"no artifact {request.id!r}", field="id")
        return SimpleNamespace(artifact=SimpleNamespace(id=self.names[request.id]))


def test_names_and_aliases_share_their_ids_replica():
    base, adapter = "a" * 32, "b" * 32
    registry = FakeRegistry({"base": base, "orders@prod": adapter})
    clock = Clock()
    resolve = RefResolver(registry, ttl_s=10.0, clock=clock)
    pool = InferencePool(
        {"r1:1": object(), "r2:1": object()}, resolve=resolve, clock=clock
    )
    by_name = inference_pb2.LoadModelRequest(model_id="base", adapter_id="orders@prod")
    by_id = inference_pb2.LoadModelRequest(model_id=base, adapter_id=adapter)
    assert pool.key_of(by_name) == pool.key_of(by_id) == f"{base}/{adapter}"
    assert registry.asked == ["base", "orders@prod"]  # ids are never asked
    pool.key_of(by_name)
    assert len(registry.asked) == 2  # cached ...
    clock.now += 10.0
    pool.key_of(by_name)
    assert len(registry.asked) == 4  # ... for ttl_s (an alias can move)
    # What the registry cannot resolve is keyed as written (inference will
    # say what is wrong with it); the request is not refused here.
    assert resolve("nope") == "nope"
