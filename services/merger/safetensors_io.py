"""Header-only reads, positioned tensor reads and streamed headers for safetensors."""

from __future__ import annotations

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
    return count * dtype.itemsize


def safetensors_header(
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict[str, str]
) -> bytes:
    """The leading bytes of a safetensors file holding `specs` in that order.

    Computed from the declared dtypes and shapes alone, so a file can be
    streamed one tensor (or one slice of a tensor) at a time; safetensors'
    save_file needs the whole shard in memory at once.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, dtype, shape in specs:
        size = nbytes(dtype, shape)
        header[name] = {
            "dtype": _CODES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


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

    def locate(self, name: str) -> tuple[torch.dtype, tuple[int, ...], int, int]:
        """(dtype, shape, offset in the file, size in bytes) of tensor `name`."""
        entry = self._entries[name]
        start, end = entry["data_offsets"]
        dtype = dtype_of_code(entry["dtype"])
        return dtype, tuple(entry["shape"]), self._data_start + start, end - start

    def read_into(self, offset: int, view: memoryview, name: str) -> None:
        """Fills `view` with the file's bytes from `offset` (part of `name`)."""
        done, size = 0, len(view)
        while done < size:
            n = os.preadv(self._fd, [view[done:]], offset + done)
            if n <= 0:
                raise invalid_file(self.path, f"it is truncated inside {name}")
            done += n

    def get_tensor(self, name: str) -> torch.Tensor:
        dtype, shape, offset, size = self.locate(name)
        if size == 0:
            return torch.empty(shape, dtype=dtype)
        # torch.empty, not bytearray: no zero-filling of bytes about to be read
        buffer = torch.empty(size, dtype=torch.uint8)
        self.read_into(offset, memoryview(buffer.numpy()), name)
        return buffer.view(dtype).reshape(shape)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
