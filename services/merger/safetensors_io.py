"""Header-only reads and a streaming writer for safetensors model files."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.safetensors_header import read_header

INDEX_NAME = "model.safetensors.index.json"

_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
_DTYPES = {code: dtype for dtype, code in _CODES.items()}


def dtype_of_code(code: str) -> torch.dtype:
    if code not in _DTYPES:
        raise FailedPrecondition(
            f"safetensors dtype {code} is not supported by the merger"
        )
    return _DTYPES[code]


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it looks like, read from file headers only."""

    name: str
    file: str
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelLayout:
    """The base model's tensors grouped by shard file, in file order.

    Keeping the same shard files (and the index) means tools that read the base
    model's layout (sharded loaders, partial downloads) read the merged one too.
    """

    directory: Path
    shards: dict[str, list[TensorInfo]]
    index: dict | None

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return {t.name: t for infos in self.shards.values() for t in infos}


def read_layout(model_dir: Path) -> ModelLayout:
    """Reads every shard's header (not its data) into a ModelLayout."""
    index_path = model_dir / INDEX_NAME
    index = None
    if index_path.is_file():
        index = _read_index(index_path)
        files = sorted(set(index["weight_map"].values()))
    else:
        files = sorted(p.name for p in model_dir.glob("*.safetensors"))
    if not files:
        raise FailedPrecondition(
            f"model directory {model_dir} has no .safetensors weights"
        )
    shards: dict[str, list[TensorInfo]] = {}
    seen: set[str] = set()
    for name in files:
        path = model_dir / name
        if not path.is_file():
            raise FailedPrecondition(
                f"{INDEX_NAME} of {model_dir} lists {name}, which is missing"
            )
        infos = []
        with _open(path) as f:
            for key in f.keys():
                if key in seen:
                    raise FailedPrecondition(
                        f"tensor {key} appears in two shards of {model_dir}"
                    )
                seen.add(key)
                s = f.get_slice(key)
                infos.append(
                    TensorInfo(
                        key, name, dtype_of_code(s.get_dtype()), tuple(s.get_shape())
                    )
                )
        shards[name] = infos
    return ModelLayout(model_dir, shards, index)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of every tensor in one safetensors file, without reading data."""
    with _open(path) as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


@contextmanager
def _open(path: Path) -> Iterator[Any]:
    """safe_open whose SafetensorError names the file as INVALID_ARGUMENT.

    A truncated or forged file in a stored artifact is bad input to the
    merge, not a crash of the merger; the message says which file to replace.
    """
    try:
        with safe_open(str(path), framework="pt") as f:
            yield f
    except SafetensorError as exc:
        raise invalid_file(path, str(exc)) from None


def invalid_file(path: Path, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"{path} is not a valid safetensors file ({problem}); register the "
        "artifact again from an intact copy"
    )


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise InvalidArgument(
            f"{path} has no weight_map object naming the shard of every tensor"
        )
    return index


def nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * torch.empty((), dtype=dtype).element_size()


class StreamingWriter:
    """Writes a safetensors file one tensor at a time, hashing what it writes.

    The header is computed up front from the declared dtypes and shapes, so
    only the tensor being written is ever held in memory (safetensors'
    save_file needs the whole shard at once). Tensor bytes go to the file
    straight from the tensor's buffer, without a copy; `close()` fsyncs the
    file and returns the sha256 of every byte written.
    """

    def __init__(
        self,
        path: Path,
        specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
        metadata: dict[str, str],
    ) -> None:
        header: dict[str, object] = {"__metadata__": dict(metadata)}
        offset = 0
        self._expected: list[tuple[str, torch.dtype, tuple[int, ...]]] = []
        for name, dtype, shape in specs:
            size = nbytes(dtype, shape)
            header[name] = {
                "dtype": _CODES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
            self._expected.append((name, dtype, tuple(shape)))
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self.path = path
        self.size = 8 + len(raw) + offset
        self._sha = hashlib.sha256()
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self._put(struct.pack("<Q", len(raw)) + raw)
        self._next = 0

    def _put(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        self._fh.write(data)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want_name, want_dtype, want_shape = self._expected[self._next]
        if (name, tensor.dtype, tuple(tensor.shape)) != (
            want_name,
            want_dtype,
            want_shape,
        ):
            raise RuntimeError(
                f"writer expected {want_name} {want_dtype} {want_shape}, "
                f"got {name} {tensor.dtype} {tuple(tensor.shape)}"
            )
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        if flat.numel():
            self._put(memoryview(flat.view(torch.uint8).numpy()))
        self._next += 1

    def close(self) -> str:
        """Flushes and fsyncs the file; returns its sha256 (hex)."""
        if self._next != len(self._expected):
            self.abort()
            raise RuntimeError(
                f"writer closed after {self._next} of {len(self._expected)} tensors"
            )
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return self._sha.hexdigest()

    def abort(self) -> None:
        self._fh.close()


@contextmanager
def streaming_writer(
    path: Path,
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
    metadata: dict[str, str],
) -> Iterator[StreamingWriter]:
    writer = StreamingWriter(path, specs, metadata)
    try:
        yield writer
    except BaseException:
        writer.abort()
        raise
    writer.close()


class TensorReader:
    """Reads single tensors from a safetensors file into their own buffers.

    safe_open memory-maps the file, and every page it touches counts in the
    process's RSS until the map closes (743 MB peak merging SmolLM2-135M); a
    positioned read per tensor keeps only the tensor in hand resident, so a
    merge's peak memory stays a few tensors wide whatever the model size.
    Same interface as safe_open's handle: keys(), get_tensor(name).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        try:
            header, self._data_start = read_header(path, str(path), field=None)
        except BaseException:
            os.close(self._fd)
            raise
        header.pop("__metadata__", None)
        self._entries = header

    def keys(self) -> list[str]:
        return list(self._entries)

    def get_tensor(self, name: str) -> torch.Tensor:
        entry = self._entries[name]
        start, end = entry["data_offsets"]
        dtype = dtype_of_code(entry["dtype"])
        shape = tuple(entry["shape"])
        size = end - start
        if size == 0:
            return torch.empty(shape, dtype=dtype)
        # torch.empty, not bytearray: no zero-filling of bytes about to be read
        buffer = torch.empty(size, dtype=torch.uint8)
        view = memoryview(buffer.numpy())
        done = 0
        while done < size:
            n = os.preadv(self._fd, [view[done:]], self._data_start + start + done)
            if n <= 0:
                raise invalid_file(self.path, f"it is truncated inside {name}")
            done += n
        return buffer.view(dtype).reshape(shape)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
