"""Files written and hashed at once: one thread writes, another hashes.

A merge's output is bound by three serial streams over every byte: sha256
(~1.7 GB/s with SHA-NI, one core), the copy into the page cache (write), and
the device flush (fsync). Doing the first two one after the other on one
writer thread made them the merge's critical path (SmolLM2-135M: 0.31 s
hashing + 0.3-0.6 s writing + 0.16 s fsync, against 0.5 s of reading and
arithmetic). Here each buffer goes to a hash lane and a write lane that run
side by side (hashlib and file writes release the GIL), and the write lane
asks the kernel to start writing back every 32 MiB, so the fsync that ends
each file waits only for the tail. Every file is still hashed from the very
bytes handed to write() and fsynced before `finish()` returns.

Memory is bounded by bytes: `put` blocks while more than `max_in_flight`
bytes are handed over and not yet both hashed and written (one buffer larger
than the bound still passes, alone).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Kernel writeback is started after this many bytes written (sync_file_range);
# large enough to be one efficient device request, small enough that the final
# fsync has little left to do.
WRITEBACK_EVERY = 32 << 20
# Buffers larger than this are handed to write() and the hash in slices, so
# the two lanes work on the same big tensor concurrently rather than in turn.
_SLICE = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int], None] | None:
    """libc's sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE), or None.

    It only starts writeback (no durability promise: fsync still gives that);
    absent outside Linux, where the final fsync simply does all the work.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int

    def start_writeback(fd: int, offset: int, nbytes: int) -> None:
        fn(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)  # advisory: errors ignored

    return start_writeback


_START_WRITEBACK = _sync_file_range()


class _Ticket:
    """One handed-over buffer; released once both lanes are done with it."""

    __slots__ = ("nbytes", "keep", "release", "left")

    def __init__(self, nbytes: int, keep: Any, release: Callable[[], None] | None):
        self.nbytes = nbytes
        self.keep = keep  # owner of the memory (a tensor, a pooled buffer)
        self.release = release
        self.left = 2


class HashedWriter:
    """Writes files one after another, each hashed (sha256) as it is written.

    Call `begin(path)`, `put(buffer)` any number of times, `end()`; repeat per
    file; then `finish()` returns {file name: (sha256 hex, size)}. Errors on
    either lane are raised from the next `put`/`end`/`finish`.
    """

    def __init__(self, max_in_flight: int) -> None:
        self._max = max_in_flight
        self._in_flight = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._digests: dict[str, str] = {}
        self._sizes: dict[str, int] = {}
        self._opened: list[Any] = []  # closed by the write lane, or by abort()
        self._lanes = [
            (queue.SimpleQueue(), self._hash_item),
            (queue.SimpleQueue(), self._write_item),
        ]
        self._threads = [
            threading.Thread(target=self._run, args=lane, name=name, daemon=True)
            for lane, name in zip(
                self._lanes, ("merge-hash", "merge-write"), strict=True
            )
        ]
        for t in self._threads:
            t.start()

    # --- the producer's side -------------------------------------------------

    def begin(self, path: Path) -> None:
        """Creates `path` now (so it exists once this returns) and starts it."""
        self._check()
        fh = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by the lane
        self._opened.append(fh)
        self._send(("begin", path.name, fh))

    def put(
        self,
        data: memoryview,
        keep: Any = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Hands `data` (bytes of the current file) to both lanes.

        `keep` is held until both are done; `release()` runs then (on a lane).
        """
        data = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        nbytes = len(data)
        with self._cond:
            while (
                self._error is None
                and self._in_flight
                and self._in_flight + nbytes > self._max
            ):
                self._cond.wait()
            if self._error is None:
                self._in_flight += nbytes
        self._check()
        ticket = _Ticket(nbytes, keep, release)
        for start in range(0, max(nbytes, 1), _SLICE):
            last = start + _SLICE >= nbytes
            self._send(("data", data[start : start + _SLICE], ticket if last else None))

    def end(self) -> None:
        """Ends the current file: digested, flushed and fsynced on the lanes."""
        self._check()
        self._send(("end",))

    def finish(self) -> dict[str, tuple[str, int]]:
        """Waits for both lanes; {file name: (sha256 hex, size)} of every file."""
        self._stop()
        self._check()
        return {name: (self._digests[name], self._sizes[name]) for name in self._sizes}

    def abort(self) -> None:
        """Stops both lanes and closes an open file (its contents are partial)."""
        self._stop()
        for fh in self._opened:
            fh.close()  # a no-op on those the write lane closed

    # --- the lanes -----------------------------------------------------------

    def _send(self, item: tuple) -> None:
        for lane, _ in self._lanes:
            lane.put(item)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        if any(t.is_alive() for t in self._threads):
            self._send(("stop",))
            for t in self._threads:
                t.join()

    def _run(self, lane: queue.SimpleQueue, handle: Callable[..., None]) -> None:
        state: dict[str, Any] = {}
        while (item := lane.get())[0] != "stop":
            try:
                if self._error is None:
                    handle(state, item)
            except BaseException as exc:  # re-raised in the producer's thread
                with self._cond:
                    self._error = self._error or exc
                    self._cond.notify_all()
            finally:
                if item[0] == "data" and item[2] is not None:
                    self._done(item[2])
                del item

    def _done(self, ticket: _Ticket) -> None:
        with self._cond:
            ticket.left -= 1
            if ticket.left:
                return
            self._in_flight -= ticket.nbytes
            self._cond.notify_all()
        ticket.keep = None
        if ticket.release is not None:
            ticket.release()

    def _hash_item(self, state: dict[str, Any], item: tuple) -> None:
        kind = item[0]
        if kind == "begin":
            state["name"], state["sha"] = item[1], hashlib.sha256()
        elif kind == "data":
            state["sha"].update(item[1])
        elif kind == "end":
            self._digests[state["name"]] = state.pop("sha").hexdigest()

    def _write_item(self, state: dict[str, Any], item: tuple) -> None:
        kind = item[0]
        if kind == "begin":
            state.update(name=item[1], fh=item[2], size=0, flushing=0)
        elif kind == "data":
            view, fd = item[1], state["fh"].fileno()
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
            state["size"] += done
            pending = state["size"] - state["flushing"]
            if _START_WRITEBACK is not None and pending >= WRITEBACK_EVERY:
                _START_WRITEBACK(fd, state["flushing"], pending)
                state["flushing"] = state["size"]
        elif kind == "end":
            fh = state.pop("fh")
            try:
                os.fsync(fh.fileno())
            finally:
                fh.close()
            self._sizes[state["name"]] = state["size"]
