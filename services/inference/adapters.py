"""The adapters loaded on every model, as one LRU cache under a byte budget.

An adapter is keyed by its model and its weights' digest: registry versions
with the same weights share one copy, and new weights under a reused name
are a new key (never served stale). Loading one that does not fit evicts the
least recently used adapters that are neither pinned nor in use by a running
request; if that is not enough, the load is refused (RESOURCE_EXHAUSTED)
rather than going over the budget.

This module only keeps the books: what is loaded, its bytes, hits, last use,
pin and the requests using it. Attaching and deleting weights on a model is
the engine's (it holds the model's lock).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.metrics import Observation

from services.common import instruments
from services.common.errors import FailedPrecondition, ResourceExhausted
from services.inference.stats import ServingStats

Key = tuple[str, str]  # (model id, adapter digest)


@dataclass
class AdapterSlot:
    model_id: str
    digest: str
    name: str  # the adapter's name inside the model (PEFT)
    bytes: int
    ids: set[str] = field(default_factory=set)
    hits: int = 0
    loads: int = 1
    last_used: float = 0.0  # wall clock, for people
    pinned: bool = False
    active: int = 0  # requests using it now
    stats: ServingStats = field(default_factory=ServingStats)
    solo: bool = False  # PEFT cannot mix it with others in one forward (DoRA)
    # A classification adapter's labels in class-id order (it serves Classify,
    # not Generate; its head is on the engine's model); empty for a causal LM.
    labels: list[str] = field(default_factory=list)


class AdapterCache:
    def __init__(
        self, budget_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.budget_bytes = budget_bytes
        self._clock = clock
        self._slots: OrderedDict[Key, AdapterSlot] = OrderedDict()  # LRU first
        self._lock = threading.Lock()
        instruments.adapter_caches.add(self, _cache_bytes)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(s.bytes for s in self._slots.values())

    def get(self, model_id: str, digest: str) -> AdapterSlot | None:
        with self._lock:
            return self._slots.get((model_id, digest))

    def acquire(
        self, model_id: str, digest: str, adapter_id: str, *, hit: bool = True
    ) -> AdapterSlot | None:
        """A request starts using a loaded adapter; None if it is not loaded.
        `hit` False: it was loaded for this request (a miss, not a hit)."""
        with self._lock:
            slot = self._slots.get((model_id, digest))
            if slot is None:
                return None
            slot.hits += hit
            instruments.add(
                instruments.adapter_cache_requests,
                1,
                {"lorafleet.cache.result": "hit" if hit else "miss"},
            )
            slot.active += 1
            slot.ids.add(adapter_id)
            slot.last_used = self._clock()
            self._slots.move_to_end((model_id, digest))
            return slot

    def release(self, slot: AdapterSlot) -> None:
        with self._lock:
            slot.active = max(0, slot.active - 1)

    def make_room(self, size: int, what: str) -> list[AdapterSlot]:
        """Takes the adapters to evict so `size` more bytes fit (out of the
        books at once: the caller deletes their weights)."""
        if size > self.budget_bytes:
            raise ResourceExhausted(
                f"{what} needs {size} bytes, more than the whole adapter budget "
                f"({self.budget_bytes} bytes); raise inference_adapter_budget_mb",
                quota_subject="inference adapter budget",
            )
        with self._lock:
            free = self.budget_bytes - sum(s.bytes for s in self._slots.values())
            victims: list[Key] = []
            for key, slot in self._slots.items():
                if free >= size:
                    break
                if not (slot.pinned or slot.active):
                    victims.append(key)
                    free += slot.bytes
            if free < size:  # evict nothing: the books stay as they were
                busy = sum(1 for s in self._slots.values() if s.pinned or s.active)
                raise ResourceExhausted(
                    f"{what} ({size} bytes) does not fit the adapter budget "
                    f"({self.budget_bytes} bytes): {busy} loaded adapters are "
                    "pinned or serving requests; retry later, unpin some, or raise "
                    "inference_adapter_budget_mb",
                    retry_after_s=1.0,
                    quota_subject="inference adapter budget",
                )
            return [self._slots.pop(key) for key in victims]

    def add(self, slot: AdapterSlot) -> None:
        with self._lock:
            slot.last_used = self._clock()
            self._slots[(slot.model_id, slot.digest)] = slot

    def pin(self, model_id: str, digest: str) -> None:
        with self._lock:
            self._slots[(model_id, digest)].pinned = True

    def remove(self, model_id: str, digest: str) -> AdapterSlot:
        """Takes one adapter out of the books (an explicit unload)."""
        with self._lock:
            slot = self._slots.get((model_id, digest))
            if slot is None:
                raise FailedPrecondition(f"adapter {digest} is not loaded")
            if slot.active:
                raise FailedPrecondition(
                    f"{slot.active} requests are using adapter "
                    f"{', '.join(sorted(slot.ids))}; unload it when they finish"
                )
            return self._slots.pop((model_id, digest))

    def drop_model(self, model_id: str) -> None:
        """A model left memory: its adapters went with it."""
        with self._lock:
            for key in [k for k in self._slots if k[0] == model_id]:
                del self._slots[key]

    def of_model(self, model_id: str) -> list[AdapterSlot]:
        """The model's adapters, most recently used first."""
        with self._lock:
            return [s for k, s in reversed(self._slots.items()) if k[0] == model_id]


def _cache_bytes(cache: AdapterCache) -> list[Observation]:
    """Bytes of adapter weights held, and the budget they must fit in."""
    return [
        Observation(cache.used_bytes, {"lorafleet.cache.measure": "loaded"}),
        Observation(cache.budget_bytes, {"lorafleet.cache.measure": "budget"}),
    ]
