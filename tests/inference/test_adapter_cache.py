"""The adapter cache: LRU under a byte budget, pins, busy adapters, digests.

The books alone (AdapterCache), then the torch engine holding real adapters
of a tiny model under a budget that fits two of them.
"""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition, ResourceExhausted
from services.inference.adapters import AdapterCache, AdapterSlot
from services.inference.engine import ArtifactRef
from services.inference.requests import GenerationRequest
from services.inference.scheduler import SchedulerSettings
from services.inference.torch_engine import TorchEngine
from tests.merger.helpers import make_adapter


def slot(digest: str, size: int = 100) -> AdapterSlot:
    return AdapterSlot("m", digest, f"d_{digest}", size, {f"id-{digest}"})


def test_least_recently_used_idle_unpinned_adapters_leave_first():
    cache = AdapterCache(300)
    for d in ("a", "b", "c"):
        cache.add(slot(d))
    cache.release(cache.acquire("m", "a", "id-a"))  # a is now the most recent
    cache.pin("m", "b")
    assert [s.digest for s in cache.make_room(100, "x")] == ["c"]
    cache.add(slot("x"))
    busy = cache.acquire("m", "a", "id-a")  # a request is using it
    with pytest.raises(ResourceExhausted, match="pinned or serving") as full:
        cache.make_room(200, "adapter y")  # only x could go: not enough
    assert full.value.retry_after_s and full.value.quota_subject
    # A refused load evicts nothing.
    assert {s.digest for s in cache.of_model("m")} == {"a", "b", "x"}
    cache.release(busy)
    assert [s.digest for s in cache.make_room(200, "y")] == ["x", "a"]


def test_hits_count_requests_that_found_it_loaded():
    cache = AdapterCache(1000)
    cache.add(slot("a"))
    assert cache.acquire("m", "a", "id-a", hit=False).hits == 0  # its own load
    assert cache.acquire("m", "a", "other-id").hits == 1
    assert cache.get("m", "a").ids == {"id-a", "other-id"}
    assert cache.acquire("m", "zz", "id-zz") is None


def test_one_adapter_larger_than_the_budget_is_refused_by_name():
    with pytest.raises(ResourceExhausted, match="more than the whole adapter budget"):
        AdapterCache(10).make_room(11, "adapter big")


def test_an_adapter_in_use_cannot_be_unloaded():
    cache = AdapterCache(1000)
    cache.add(slot("a"))
    cache.acquire("m", "a", "id-a")
    with pytest.raises(FailedPrecondition, match="1 requests are using adapter id-a"):
        cache.remove("m", "a")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("adapters")
    base = ArtifactRef(
        "base", "tiny", "BASE_MODEL", str(tiny_model_dir), "sha256:base", {}
    )
    found = {"base": base}
    for seed in (1, 2, 3):
        path = root / f"lora-{seed}"
        make_adapter(tiny_model_dir, path, seed=seed)
        found[f"lora-{seed}"] = ArtifactRef(
            f"lora-{seed}",
            f"lora-{seed}",
            "ADAPTER",
            str(path),
            f"sha256:{seed}",
            {"base_model_id": "base", "base_model_digest": "sha256:base"},
        )
    make_adapter(tiny_model_dir, root / "dora", seed=4, use_dora=True)
    found["dora"] = ArtifactRef(
        "dora", "dora", "ADAPTER", str(root / "dora"), "sha256:dora",
        {"base_model_id": "base", "base_model_digest": "sha256:base"},
    )  # fmt: skip
    # The same weights registered again: another id, the same digest.
    found["lora-1-again"] = ArtifactRef(
        "lora-1-again", "lora-1", "ADAPTER", str(root / "lora-1"), "sha256:1",
        {"base_model_id": "base", "base_model_digest": "sha256:base"},
    )  # fmt: skip
    return found


def generate(engine, adapter_id: str) -> str:
    req = GenerationRequest(prompt="Order for Ana", max_new_tokens=6)
    return engine.generate("base", adapter_id, req).text


def test_the_engine_keeps_adapters_within_its_budget(artifacts):
    probe = TorchEngine(artifacts.__getitem__, "cpu", 1, 64)
    try:
        probe.load("base", "lora-1")
        size = probe.loaded()[0].adapters[0].bytes
    finally:
        probe.close()
    assert size > 0
    engine = TorchEngine(
        artifacts.__getitem__,
        "cpu",
        1,
        64,
        SchedulerSettings(max_batch=4),
        adapter_budget_bytes=2 * size,
    )
    try:
        text1 = generate(engine, "lora-1")
        text2 = generate(engine, "lora-2")
        assert text1 != text2
        generate(engine, "lora-3")  # evicts lora-1, the least recently used
        [model] = engine.loaded()
        assert [a.adapter_ids for a in model.adapters] == [["lora-3"], ["lora-2"]]
        assert sum(a.bytes for a in model.adapters) <= 2 * size
        # Back on demand, with the same weights (the same text).
        assert generate(engine, "lora-1") == text1
        [model] = engine.loaded()
        assert [a.adapter_ids for a in model.adapters] == [["lora-1"], ["lora-3"]]
        # Same digest, other id: the loaded copy serves it (a hit, not a load).
        assert generate(engine, "lora-1-again") == text1
        [model] = engine.loaded()
        lora1 = model.adapters[0]
        assert lora1.adapter_ids == ["lora-1", "lora-1-again"]
        assert (lora1.loads, lora1.hits) == (1, 1)
        assert lora1.stats.requests == 2 and lora1.stats.completion_tokens > 0
        # Pinned adapters stay: loading two more evicts around lora-1.
        engine.load("base", "lora-1", pin=True)
        generate(engine, "lora-2")
        generate(engine, "lora-3")
        [model] = engine.loaded()
        assert {a.adapter_ids[0]: a.pinned for a in model.adapters} == {
            "lora-3": False,
            "lora-1": True,
        }
        assert engine.unload("base", "lora-3")
        assert not engine.unload("base", "lora-3")
        [model] = engine.loaded()
        assert [a.adapter_ids for a in model.adapters] == [["lora-1", "lora-1-again"]]
    finally:
        engine.close()


def test_a_dora_adapter_serves_beside_lora_ones(artifacts):
    """PEFT refuses DoRA in a mixed-adapter forward: the engine decodes its
    rows in their own batch, concurrently with the others."""
    engine = TorchEngine(artifacts.__getitem__, "cpu", 1, 64)
    try:
        alone = {a: generate(engine, a) for a in ("dora", "lora-1", "")}
        req = GenerationRequest(prompt="Order for Ana", max_new_tokens=6)
        handles = {a: engine.submit("base", a, req) for a in ("dora", "lora-1", "")}
        together = {a: list(h.results())[-1][1].text for a, h in handles.items()}
        assert together == alone
        [model] = engine.loaded()
        solo = {a.adapter_ids[0]: a for a in model.adapters}
        assert solo["dora"].stats.requests == 2
    finally:
        engine.close()
