"""Reusing the KV cache of prompt prefixes that requests share.

Chat prompts of one deployment start alike (the template's system turn, a
shared instruction), so each request's prefill would recompute the same
keys and values. After a prefill, the keys and values of the prompt's first
k tokens are kept for every k that is a multiple of BLOCK (the longest few
per prompt), keyed by the adapter and those tokens; a later prompt with the
same adapter and the same first k tokens starts from a copy-free view of
them and prefills only the rest. An adapter changes the keys and values of
every layer, so entries never cross adapters.

Entries leave least recently used first beyond a byte budget. Keys are the
tokens themselves (a tuple), never a hash alone: two prompts share an entry
only when their prefixes are equal.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

BLOCK = 16  # prefix lengths kept: multiples of this
KEPT_PER_PROMPT = 4  # the longest this many block boundaries of each prompt


@dataclass
class PrefixStats:
    lookups: int = 0
    hits: int = 0
    tokens_reused: int = 0
    tokens_prefilled: int = 0


class PrefixCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[tuple[str, tuple[int, ...]], list] = OrderedDict()
        self._bytes: dict[tuple[str, tuple[int, ...]], int] = {}
        self._used = 0
        self._lock = threading.Lock()
        self.stats = PrefixStats()

    def longest(self, adapter: str, ids: list[int]) -> tuple[int, list | None]:
        """The longest kept prefix of `ids` (shorter than all of it, so one
        token is always left to run): (its length, its layers' (k, v))."""
        with self._lock:
            self.stats.lookups += 1
            k = (len(ids) - 1) // BLOCK * BLOCK
            while k > 0:
                key = (adapter, tuple(ids[:k]))
                layers = self._entries.get(key)
                if layers is not None:
                    self._entries.move_to_end(key)
                    self.stats.hits += 1
                    self.stats.tokens_reused += k
                    return k, layers
                k -= BLOCK
            return 0, None

    def keep(self, adapter: str, ids: list[int], layers: list) -> None:
        """Keeps block-aligned prefixes of a prompt just prefilled; `layers`
        are its full (k, v) per layer, [1, heads, len(ids), dim]."""
        if self.budget_bytes <= 0:
            return
        top = len(ids) // BLOCK * BLOCK
        lengths = [k for k in range(top, 0, -BLOCK)][:KEPT_PER_PROMPT]
        for k in lengths:
            key = (adapter, tuple(ids[:k]))
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    continue
            kept = [
                (keys[:, :, :k].clone(), values[:, :, :k].clone())
                for keys, values in layers
            ]
            size = sum(a.numel() * a.element_size() * 2 for a, _ in kept)
            if size > self.budget_bytes:
                continue
            with self._lock:
                while self._used + size > self.budget_bytes and self._entries:
                    old, _ = self._entries.popitem(last=False)
                    self._used -= self._bytes.pop(old)
                self._entries[key] = kept
                self._bytes[key] = size
                self._used += size

    def clear_adapter(self, adapter: str) -> None:
        """An adapter left the model: its entries are of no use any more."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == adapter]:
                del self._entries[key]
                self._used -= self._bytes.pop(key)

    @property
    def used_bytes(self) -> int:
        return self._used
