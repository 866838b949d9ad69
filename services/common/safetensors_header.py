"""Header-only validation of safetensors files, with messages that say what is wrong.

The registry checks every .safetensors file it admits, so a truncated copy, a
header claiming data the file does not hold, or a pickle renamed .safetensors
is refused at registration instead of failing a merge or a load later. Only
the header is read (models can be many GB); the data is accounted for through
the offsets and the file size from os.stat.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument, shorten

# safetensors refuses headers above 100 MB (HeaderTooLarge); so do we.
MAX_HEADER_BYTES = 100_000_000
# Bits per element of every dtype safetensors 0.8 reads.
DTYPE_BITS = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
# Leading bytes of formats people rename to .safetensors by mistake.
_LOOKALIKES = (
    (b"PK\x03\x04", "a zip archive (torch.save's format)"),
    (b"\x80", "a Python pickle (torch.save's legacy format)"),
    (b"GGUF", "a GGUF file"),
)


def read_header(
    path: Path, name: str | None = None, *, field: str | None = "source_path"
) -> tuple[dict[str, Any], int]:
    """(header JSON object, data start offset) of a safetensors file.

    Raises InvalidArgument naming `name` (default: the file name) and `field`
    when the 8-byte length or the JSON header is malformed.
    """
    try:
        return _parse_header(path)
    except _Problem as problem:
        raise _invalid(name or path.name, problem, field) from None


def check_safetensors_file(
    path: Path, name: str | None = None, *, field: str | None = "source_path"
) -> None:
    """Refuses a file whose header does not describe exactly the bytes it holds.

    Every tensor needs a known dtype, a shape of non-negative integers and
    data_offsets whose length is the shape's byte size; sorted by offset the
    tensors must tile the data area from 0 to the end of the file with no gap
    and no overlap. safetensors' own parser then reads the header too, so a
    rule of the library this module does not spell out still refuses.
    """
    try:
        _check(path)
    except _Problem as problem:
        raise _invalid(name or path.name, problem, field) from None


class _Problem(Exception):
    """What is wrong with a file, phrased to follow "<file> is not a valid ...: "."""


def _parse_header(path: Path) -> tuple[dict[str, Any], int]:
    size = os.stat(path).st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
        if len(head) < 8:
            raise _Problem(f"it is {size} bytes, shorter than the 8-byte header")
        (length,) = struct.unpack("<Q", head[:8])
        if len(head) == 9 and head[8:] != b"{":  # a header is a JSON object
            raise _Problem(_not_safetensors(head))
        if length > MAX_HEADER_BYTES:
            raise _Problem(
                f"its first 8 bytes give a header length of {length} bytes, above "
                f"safetensors' limit of {MAX_HEADER_BYTES}; it is not safetensors"
            )
        if 8 + length > size:
            raise _Problem(
                f"its first 8 bytes give a header length of {length} bytes, but "
                f"the file has only {size} bytes; it is truncated"
            )
        raw = head[8:] + fh.read(length - 1) if length else b""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Problem(f"its {length}-byte header is not UTF-8 JSON ({exc})") from None
    if not isinstance(header, dict):
        raise _Problem("its header is not a JSON object")
    return header, 8 + length


def _check(path: Path) -> None:
    header, data_start = _parse_header(path)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(v, str) for v in metadata.values())
    ):
        raise _Problem("its __metadata__ is not an object of strings")
    spans = sorted((_span(tensor, entry), tensor) for tensor, entry in header.items())
    end = 0
    for (start, stop), tensor in spans:
        if start != end:
            what = "a gap" if start > end else "an overlap"
            raise _Problem(
                f"tensor {shorten(tensor)!r} starts at data offset {start} where "
                f"the previous data ends at {end} ({what} in the data area)",
            )
        end = stop
    size = os.stat(path).st_size
    if data_start + end != size:
        state = "truncated" if data_start + end > size else "followed by stray bytes"
        raise _Problem(
            f"its header describes {data_start + end} bytes but the file has "
            f"{size}; it is {state}",
        )
    _library_check(path)


def _span(tensor: str, entry: Any) -> tuple[int, int]:
    tensor = shorten(tensor)
    if not isinstance(entry, dict):
        raise _Problem(f"tensor {tensor!r} is not described by an object")
    dtype, shape, offsets = (entry.get(k) for k in ("dtype", "shape", "data_offsets"))
    if dtype not in DTYPE_BITS:
        raise _Problem(
            f"tensor {tensor!r} has dtype {shorten(repr(dtype))}; valid dtypes are "
            + ", ".join(DTYPE_BITS),
        )
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise _Problem(
            f"tensor {tensor!r} has shape {shorten(repr(shape))}, not a list of "
            "non-negative integers",
        )
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_count(o) for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise _Problem(
            f"tensor {tensor!r} has data_offsets {shorten(repr(offsets))}, not "
            "[begin, end] with 0 <= begin <= end",
        )
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise _Problem(
            f"tensor {tensor!r} is {dtype} {shorten(shape)}, {bits / 8:g} bytes, "
            f"but its data_offsets {offsets} span {offsets[1] - offsets[0]}",
        )
    return offsets[0], offsets[1]


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _not_safetensors(head: bytes) -> str:
    for magic, what in _LOOKALIKES:
        if head.startswith(magic):
            return (
                f"it is {what}, not safetensors; load it where you trust it and "
                "re-save it with safetensors' save_file"
            )
    return "no JSON header follows its first 8 bytes; it is not safetensors"


def _library_check(path: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except SafetensorError as exc:
        raise _Problem(f"safetensors cannot read it: {exc}") from None


def _invalid(name: str, problem: _Problem, field: str | None) -> InvalidArgument:
    return InvalidArgument(
        f"{name} is not a valid safetensors file: {problem}", field=field
    )
