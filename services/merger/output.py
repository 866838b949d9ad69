"""A merged model's output: sharded safetensors, an index, side files, digests.

Tensors are written one at a time into shards of at most `max_shard_size`
bytes, named as transformers' save_pretrained names them
(`model.safetensors`, or `model-00001-of-0000N.safetensors` plus
`model.safetensors.index.json`); the split itself is huggingface_hub's, so a
loader that reads save_pretrained's output reads ours. Every file is hashed
while it is written and fsynced, so the caller can hand the registry the
manifest digest to verify (`expected_digest`) without reading anything twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_state_dict_into_shards_factory

from services.common.errors import InvalidArgument
from services.merger.safetensors_io import INDEX_NAME, nbytes, safetensors_header
from services.merger.write_lanes import HashedWriter

# Big enough that a 1B model in bf16 is one file, small enough that a copy or
# an upload of one shard is quick to retry; override per request.
DEFAULT_MAX_SHARD_SIZE = 2 * 2**30
FILENAME_PATTERN = "model{suffix}.safetensors"
# Weights and pickles are never copied from the base; the merge writes its own.
_SKIPPED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt")
_CHUNK = 1 << 20
# Bytes handed to the writer threads and not yet written: enough to keep both
# busy while the next tensor is computed (SmolLM2-135M: no slower than 32 MiB,
# 45 MB less peak memory), small next to any model.
DEFAULT_MAX_IN_FLIGHT = 8 << 20
# Elements per slice when scanning a tensor, so checks allocate little.
_SCAN = 1 << 22

Spec = tuple[str, torch.dtype, tuple[int, ...]]


@dataclass(frozen=True)
class WrittenFiles:
    """What was written: relative path -> (sha256 hex, size in bytes)."""

    files: dict[str, tuple[str, int]]
    shards: int
    total_size: int

    def manifest_digest(self) -> str:
        """The registry's artifact digest of exactly these files.

        Same formula as the registry's manifest (sha256 over the sorted
        "<path>\\t<sha256>\\t<size>\\n" lines); passed as `expected_digest`, it
        makes the registry refuse a copy that differs from what was written.
        """
        lines = sorted(
            f"{path}\t{sha}\t{size}\n" for path, (sha, size) in self.files.items()
        )
        return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def check_max_shard_size(max_shard_size: int) -> None:
    if max_shard_size <= 0:
        raise InvalidArgument(
            f"max_shard_size must be a positive number of bytes, got "
            f"{max_shard_size}; leave it 0 in a request for the default "
            f"({DEFAULT_MAX_SHARD_SIZE} bytes)",
            field="max_shard_size",
        )


class ModelWriter:
    """Streams a model's tensors into save_pretrained-style shards.

    Tensors must be written in `order` (shard by shard), whole (`write`) or
    as consecutive slices of their bytes (`write_bytes`, for a tensor copied
    from its source without decoding it). Hashing, writing and fsyncing run
    on two threads of a HashedWriter while the caller computes the next
    tensor; at most `max_in_flight` bytes are handed over and not yet written,
    so memory stays at that plus the tensors the caller holds.
    """

    def __init__(
        self,
        out_dir: Path,
        specs: list[Spec],
        metadata: dict[str, str],
        max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        check_max_shard_size(max_shard_size)
        by_name = {name: (name, dtype, shape) for name, dtype, shape in specs}
        split = split_state_dict_into_shards_factory(
            by_name,
            get_storage_size=lambda spec: nbytes(spec[1], spec[2]),
            filename_pattern=FILENAME_PATTERN,
            max_shard_size=max_shard_size,
        )
        self._dir = out_dir
        self._metadata = metadata
        self._shards = [
            (file, [by_name[n] for n in names])
            for file, names in split.filename_to_tensors.items()
        ]
        self._split = split
        self.order = [spec[0] for _, specs_ in self._shards for spec in specs_]
        # (shard index, position in it) of each tensor, in `order`
        self._place = [
            (i, j)
            for i, (_, specs_) in enumerate(self._shards)
            for j in range(len(specs_))
        ]
        self._next = 0  # index in `order` of the tensor being written
        self._left = 0  # bytes still to come of a tensor written in slices
        self._lanes = HashedWriter(max_in_flight)

    def _expect(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        if self._next >= len(self.order):
            raise RuntimeError(f"writer got {name} after the last tensor")
        shard, pos = self._place[self._next]
        want = self._shards[shard][1][pos]
        if (name, dtype, tuple(shape)) != (want[0], want[1], tuple(want[2])):
            raise RuntimeError(
                f"writer expected {want[0]} {want[1]} {tuple(want[2])}, "
                f"got {name} {dtype} {tuple(shape)}"
            )
        if pos == 0:  # a shard's first tensor: its file starts with the header
            file, specs = self._shards[shard]
            self._lanes.begin(self._dir / file)
            header = safetensors_header(specs, self._metadata)
            self._lanes.put(memoryview(header), keep=header)

    def _tensor_done(self) -> None:
        shard, pos = self._place[self._next]
        self._next += 1
        if pos == len(self._shards[shard][1]) - 1:
            self._lanes.end()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Hands `tensor` to the writer threads; waits while too much is in flight."""
        if self._left:
            raise RuntimeError(f"writer got {name} inside another tensor's bytes")
        self._expect(name, tensor.dtype, tuple(tensor.shape))
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        view = memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else None
        if view is not None:
            self._lanes.put(view, keep=flat)
        self._tensor_done()

    def write_bytes(
        self,
        name: str,
        dtype: torch.dtype,
        shape: tuple[int, ...],
        data: memoryview,
        release: Callable[[], None] | None = None,
    ) -> None:
        """The next slice of tensor `name`'s bytes (already in the output dtype).

        `data` must stay untouched until `release()` runs (on a writer thread).
        """
        if not self._left:
            self._expect(name, dtype, shape)
            self._left = nbytes(dtype, shape)
        elif self.order[self._next] != name:
            raise RuntimeError(f"writer got {name} inside another tensor's bytes")
        if len(data) > self._left or not len(data):
            raise RuntimeError(f"writer got {len(data)} bytes for {name}")
        self._left -= len(data)
        self._lanes.put(data, release=release)
        if not self._left:
            self._tensor_done()

    def close(self) -> WrittenFiles:
        if self._next != len(self.order) or self._left:
            self.abort()
            raise RuntimeError(
                f"model writer closed after {self._next} of {len(self.order)} tensors"
            )
        try:
            files = self._lanes.finish()
        except BaseException:
            self.abort()
            raise
        if self._split.is_sharded:
            index = {
                "metadata": {"total_size": self._split.metadata["total_size"]},
                "weight_map": dict(sorted(self._split.tensor_to_filename.items())),
            }
            data = (json.dumps(index, indent=2) + "\n").encode()
            files[INDEX_NAME] = write_synced(self._dir / INDEX_NAME, data)
        return WrittenFiles(
            files, len(self._shards), self._split.metadata["total_size"]
        )

    def abort(self) -> None:
        self._lanes.abort()


@contextmanager
def model_writer(
    out_dir: Path,
    specs: list[Spec],
    metadata: dict[str, str],
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
) -> Iterator[ModelWriter]:
    """A ModelWriter that leaves no open file behind if the merge fails."""
    writer = ModelWriter(out_dir, specs, metadata, max_shard_size)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise


def write_synced(path: Path, data: bytes) -> tuple[str, int]:
    """Writes and fsyncs `data`; returns (sha256 hex, size)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return hashlib.sha256(data).hexdigest(), len(data)


def copy_synced(src: Path, dst: Path) -> tuple[str, int]:
    """Copies a file in chunks, hashing and fsyncing; returns (sha256 hex, size)."""
    sha = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(_CHUNK):
            sha.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return sha.hexdigest(), size


def copy_side_files(
    base_dir: Path,
    out_dir: Path,
    dtype_name: str,
    config_updates: dict[str, Any] | None = None,
) -> dict[str, tuple[str, int]]:
    """Config, tokenizer, generation config, chat template: all but the weights.

    Returns their digests; config.json records the output dtype when it
    changed, and `config_updates` (a classifier's architecture and labels).
    """
    files: dict[str, tuple[str, int]] = {}
    for f in sorted(base_dir.iterdir()):
        if (
            f.is_file()
            and not f.name.startswith(".")
            and f.name != INDEX_NAME
            and not f.name.endswith(_SKIPPED_SUFFIXES)
        ):
            if f.name == "config.json" and (dtype_name != "same" or config_updates):
                config = json.loads(f.read_text())
                if dtype_name != "same":
                    keys = [k for k in ("dtype", "torch_dtype") if k in config]
                    config.update({k: dtype_name for k in keys or ["dtype"]})
                config.update(config_updates or {})
                data = (json.dumps(config, indent=2) + "\n").encode()
                files[f.name] = write_synced(out_dir / f.name, data)
            else:
                files[f.name] = copy_synced(f, out_dir / f.name)
    return files


def fsync_tree(directory: Path) -> None:
    """fsyncs a directory and every directory under it (their entries)."""
    for d in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sweep_stale_staging(staging_dir: Path, older_than_s: float) -> list[Path]:
    """Removes temp directories of merges that died (killed, crashed machine).

    A killed merge leaves its hidden `.merge-*.tmp` directory behind (never a
    visible one). One in which no file changed for `older_than_s` is no longer
    being written by anyone and is removed; returns what was removed.
    """
    removed = []
    now = time.time()
    for tmp in staging_dir.glob(".merge-*.tmp") if staging_dir.is_dir() else []:
        try:
            newest = max(p.stat().st_mtime for p in [tmp, *tmp.rglob("*")])
        except OSError:
            continue  # vanished meanwhile: its merge finished or cleaned up
        if now - newest > older_than_s:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def all_finite(tensor: torch.Tensor) -> bool:
    """True when no entry is NaN or Inf.

    A float32 sum is NaN or Inf whenever any entry is (IEEE propagation), so a
    finite sum proves every entry finite in one vectorised pass; only a
    non-finite sum, which an overflow could also cause, is checked entry by
    entry (in slices, so no full-size mask is allocated).
    """
    if not tensor.is_floating_point():
        return True
    flat = tensor.reshape(-1)
    for i in range(0, flat.numel(), _SCAN):
        part = flat[i : i + _SCAN]  # slices: a 16-bit tensor is upcast in pieces
        if not math.isfinite(float(part.sum(dtype=torch.float32))) and not bool(
            torch.isfinite(part).all()
        ):
            return False
    return True


def max_abs_change(new: torch.Tensor, old: torch.Tensor) -> float:
    """max |new - old| in float32, computed slice by slice.

    The difference is a fresh tensor, so abs_ works in place, and amax
    reduces it about 4x faster than max() (SmolLM2-135M's merge: 0.27-0.4 s
    down to ~0.05 s); a NaN propagates through either.
    """
    a, b = new.reshape(-1), old.reshape(-1)
    worst = 0.0
    for i in range(0, a.numel(), _SCAN):
        diff = a[i : i + _SCAN].to(torch.float32) - b[i : i + _SCAN].to(torch.float32)
        worst = max(worst, float(diff.abs_().amax()))
    return worst


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Runs torch with `count` intra-op threads, restoring the setting after.

    A merge's arithmetic is memory-bound; with more OpenMP threads than free
    cores, the threads spin-wait for each other (SmolLM2-135M on a busy 2-core
    machine: 1.7 s with one thread, 6.7-15 s with two).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
