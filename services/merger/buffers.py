"""Reused byte buffers for a streamed merge, so its memory is touched once.

Every fresh multi-MB tensor is mapped by the kernel page by page on first
touch; merging SmolLM2-135M with a new buffer for each read, delta and
difference took ~100k-300k page faults (0.5-1.5 s of system time on a busy
2-core machine), more than the arithmetic. Buffers handed to the writer
threads come back through `BufferPool.give`; a merge-local `Scratch` holds
what never leaves the merging thread.
"""

from __future__ import annotations

import threading

import torch

# What a pool keeps for reuse; more is freed. Enough for every tensor size of a
# small model several times over; a large model's big tensors are allocated
# afresh, where their arithmetic dwarfs the page faults anyway.
DEFAULT_KEEP_BYTES = 48 << 20


class BufferPool:
    """uint8 buffers by exact size; thread-safe (given back on writer threads)."""

    def __init__(self, keep_bytes: int = DEFAULT_KEEP_BYTES) -> None:
        self._keep = keep_bytes
        self._kept = 0
        self._free: dict[int, list[torch.Tensor]] = {}
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> torch.Tensor:
        """A buffer of exactly `nbytes` bytes (contents undefined)."""
        with self._lock:
            free = self._free.get(nbytes)
            if free:
                self._kept -= nbytes
                return free.pop()
        # torch.empty: no zero-filling of bytes about to be overwritten
        return torch.empty(nbytes, dtype=torch.uint8)

    def give(self, buffer: torch.Tensor) -> None:
        """Returns a buffer from `take`; kept while the pool is under its cap."""
        nbytes = buffer.numel()
        with self._lock:
            if self._kept + nbytes <= self._keep:
                self._free.setdefault(nbytes, []).append(buffer)
                self._kept += nbytes


class Scratch:
    """One growing buffer for values that never leave the merging thread."""

    def __init__(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)

    def take(self, nbytes: int) -> torch.Tensor:
        """`nbytes` bytes of the buffer (grown as needed), valid until the next take."""
        if self._buffer.numel() < nbytes:
            self._buffer = torch.empty(nbytes, dtype=torch.uint8)
        return self._buffer[:nbytes]
