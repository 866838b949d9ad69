"""Adapter affinity across inference replicas: rendezvous hashing, bounded load."""

from __future__ import annotations

from collections import Counter

import pytest

from services.gateway.replicas import ReplicaChooser

REPLICAS = ["inference-a:50055", "inference-b:50055", "inference-c:50055"]
KEYS = [f"base-1/adapter-{i}" for i in range(3000)]


def top(chooser: ReplicaChooser, key: str) -> str:
    return chooser.rank(key)[0]


def test_a_key_always_prefers_the_same_replica_in_any_process():
    one, other = ReplicaChooser(REPLICAS), ReplicaChooser(list(reversed(REPLICAS)))
    assert [top(one, k) for k in KEYS[:200]] == [top(other, k) for k in KEYS[:200]]


def test_keys_spread_evenly_over_the_replicas():
    chooser = ReplicaChooser(REPLICAS)
    counts = Counter(top(chooser, k) for k in KEYS)
    assert set(counts) == set(REPLICAS)
    assert all(abs(n - 1000) < 150 for n in counts.values()), counts


def pick(chooser: ReplicaChooser, key: str, exclude=frozenset()) -> str:
    replica = chooser.acquire(key, exclude)
    chooser.release(replica)
    return replica


def test_a_replica_dropping_out_only_moves_its_own_keys():
    chooser = ReplicaChooser(REPLICAS)
    before = {k: pick(chooser, k) for k in KEYS}
    assert before == {k: top(chooser, k) for k in KEYS}
    after = {k: pick(chooser, k, frozenset({REPLICAS[2]})) for k in KEYS}
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == REPLICAS[2]}
    # And coming back takes exactly those keys back.
    assert {k: pick(chooser, k) for k in KEYS} == before
    assert chooser.acquire(KEYS[0], frozenset(REPLICAS)) is None


def test_a_hot_key_overflows_to_its_next_replica_within_the_bound():
    chooser = ReplicaChooser(REPLICAS, epsilon=0.25, min_bound=8)
    hot = KEYS[0]
    ranking = chooser.rank(hot)
    held = [chooser.acquire(hot) for _ in range(30)]
    load = chooser.in_flight()
    # A batch's worth stays together on the favourite, then the rest spills
    # over in ranking order, no replica above max(8, ceil(1.25 x 30 / 3)).
    assert held[:8] == [ranking[0]] * 8 and held[8] == ranking[1]
    assert max(load.values()) <= 13 and sum(load.values()) == 30
    assert load[ranking[0]] >= load[ranking[1]] >= load[ranking[2]] > 0
    for replica in held:
        chooser.release(replica)
    assert sum(chooser.in_flight().values()) == 0
    assert chooser.acquire(hot) == ranking[0]  # back home once load is gone


def test_sequential_traffic_never_leaves_the_favourite():
    chooser = ReplicaChooser(REPLICAS, min_bound=1)
    for key in KEYS[:100]:
        replica = chooser.acquire(key)
        assert replica == top(chooser, key)
        chooser.release(replica)


def test_bad_replica_lists_are_refused():
    with pytest.raises(ValueError, match="at least one inference replica"):
        ReplicaChooser([])
    with pytest.raises(ValueError, match="epsilon must be positive"):
        ReplicaChooser(REPLICAS, epsilon=0)
