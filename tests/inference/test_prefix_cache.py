"""Shared prompt prefixes: kept per adapter, reused, token-identical output."""

from __future__ import annotations

import torch

from services.inference.prefix_cache import BLOCK, PrefixCache
from services.inference.sampling import RowSampler
from services.inference.scheduler import BatchScheduler, SchedulerSettings, Sequence
from tests.inference.test_batch import alone


def layers(length: int, value: float = 1.0):
    shape = (1, 2, length, 4)
    return [(torch.full(shape, value), torch.full(shape, -value)) for _ in range(2)]


def test_the_longest_kept_block_prefix_is_found_per_adapter():
    cache = PrefixCache(1 << 20)
    ids = list(range(40))
    cache.keep("a1", ids, layers(40))
    k, kept = cache.longest("a1", ids + [99])
    assert k == 32 and kept[0][0].shape[2] == 32
    assert cache.longest("a1", list(range(20)) + [7] * 20)[0] == BLOCK
    assert cache.longest("a2", ids + [99]) == (0, None)  # other adapter
    # Never all of a prompt: one token must be left to run.
    assert cache.longest("a1", ids[:32])[0] == 16
    assert cache.longest("a1", [5] + ids)[0] == 0
    cache.clear_adapter("a1")
    assert cache.longest("a1", ids + [99]) == (0, None) and cache.used_bytes == 0


def test_entries_leave_least_recently_used_first_within_the_budget():
    one = 2 * 2 * (1 * 2 * BLOCK * 4) * 4  # layers x (k, v) x floats x bytes
    cache = PrefixCache(2 * one)
    first, second, third = ([i] * BLOCK + [0] for i in (1, 2, 3))
    cache.keep("a", first, layers(BLOCK + 1))
    cache.keep("a", second, layers(BLOCK + 1))
    assert cache.longest("a", first)[0] == BLOCK  # first is now the most recent
    cache.keep("a", third, layers(BLOCK + 1))
    assert cache.used_bytes <= 2 * one
    assert cache.longest("a", second)[0] == 0  # evicted
    assert cache.longest("a", first)[0] == BLOCK
    assert cache.longest("a", third)[0] == BLOCK


def test_kept_prefixes_leave_the_output_token_identical(tiny):
    model, tok = tiny
    shared = [7, 8, 9, 10, 11, 12] * 7  # 42 tokens every prompt starts with
    asks = [(shared + tail, adapter, 10) for tail, adapter in (
        ([40, 41], "a1"), ([42], "a1"), ([43, 44, 45], "a2"), ([46], "a1"),
    )]  # fmt: skip
    expected = [alone(model, *a) for a in asks]
    sched = BatchScheduler("tiny", model, tok, SchedulerSettings(max_batch=1))
    try:
        seqs = []
        for ids, adapter, new in asks:  # one at a time: each can reuse the last
            seq = Sequence(ids, adapter, new, RowSampler(0, 1, 0), frozenset())
            list(sched.submit(seq).results())
            seqs.append(seq)
        stats = sched.prefixes.stats
    finally:
        sched.close()
    assert [s.generated for s in seqs] == expected
    # The second a1 prompt reused 32 tokens, the third a1 prompt too; a2 none.
    assert stats.hits == 2 and stats.tokens_reused == 64
