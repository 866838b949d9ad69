"""The LoRA merge's tensors, streamed through reused buffers.

Most of a merge's bytes are tensors it leaves alone (embeddings, norms,
unadapted layers): those go to the output in slices, never decoded into a
whole tensor (SmolLM2's 113 MB embedding was the merge's peak memory). An
adapted weight is read into a scratch buffer and merged into a pooled one
that the writer threads hand back (services/merger/buffers.py says why).
Every value written is checked for NaN/Inf, by the caller's `check` or, for
a float32 merge, by the max |change| the merge computes anyway.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from services.merger.buffers import BufferPool, Scratch
from services.merger.output import ModelWriter
from services.merger.safetensors_io import TensorReader, nbytes

# Bytes per slice of a copied tensor: a multiple of every element size; big
# enough that per-slice overhead is noise, small enough that a few slices in
# flight cost little memory.
COPY_SLICE = 1 << 20

Check = Callable[[str, torch.Tensor], None]


def _bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy())


class TensorStream:
    """Writes base tensors, copied or merged, into a ModelWriter."""

    def __init__(self, writer: ModelWriter, check: Check) -> None:
        self._writer = writer
        self._check = check
        self._pool = BufferPool()
        self._weight = Scratch()
        self._diff = Scratch()

    def _hand_over(
        self, name: str, values: torch.Tensor, buffer: torch.Tensor, shape: tuple
    ) -> None:
        """Writes `values` (a view of pooled `buffer`); the pool gets it back."""
        self._writer.write_bytes(
            name, values.dtype, shape, _bytes(values), lambda: self._pool.give(buffer)
        )

    def copy(self, reader: TensorReader, name: str, out_dtype: torch.dtype) -> None:
        """Writes base tensor `name` (not empty) as `out_dtype`, slice by slice."""
        dtype, shape, offset, size = reader.locate(name)
        for start in range(0, size, COPY_SLICE):
            count = min(COPY_SLICE, size - start)
            buffer = self._pool.take(count)
            try:
                reader.read_into(offset + start, memoryview(buffer.numpy()), name)
                values = buffer.view(dtype)
                if out_dtype != dtype:
                    converted = self._pool.take(values.numel() * out_dtype.itemsize)
                    self._pool.give(buffer)
                    buffer = converted
                    values = converted.view(out_dtype).copy_(values)
                self._check(name, values)
            except BaseException:
                self._pool.give(buffer)
                raise
            self._hand_over(name, values, buffer, shape)

    def merge(
        self,
        reader: TensorReader,
        name: str,
        out_dtype: torch.dtype,
        a: torch.Tensor,
        b: torch.Tensor,
        scale: float,
    ) -> float:
        """Writes W + scale*(B@A) for base weight `name`; returns max |change|.

        The same operations in the same order as merged_weight (and so PEFT):
        B@A in float32, times scale, plus W in float32; only the buffers differ.
        """
        dtype, shape, offset, size = reader.locate(name)
        raw = self._weight.take(size)
        reader.read_into(offset, memoryview(raw.numpy()), name)
        weight = raw.view(dtype).reshape(shape).to(torch.float32)
        buffer = self._pool.take(nbytes(torch.float32, shape))
        merged = buffer.view(torch.float32).reshape(shape)
        torch.mm(b.to(torch.float32), a.to(torch.float32), out=merged)
        merged.mul_(scale).add_(weight)
        diff = self._diff.take(buffer.numel()).view(torch.float32).reshape(shape)
        torch.sub(merged, weight, out=diff)
        change = float(diff.abs_().amax()) if size else 0.0
        # A finite max |merged - W| proves float32 `merged` finite (an Inf or
        # NaN on either side makes the difference Inf or NaN, and amax keeps
        # NaN), so the separate scan is only needed after a conversion.
        proven = out_dtype == torch.float32 and math.isfinite(change)
        if out_dtype != torch.float32:
            converted = self._pool.take(nbytes(out_dtype, shape))
            self._pool.give(buffer)
            buffer = converted
            merged = converted.view(out_dtype).reshape(shape).copy_(merged)
        try:
            if not proven:
                self._check(name, merged)
        except BaseException:
            self._pool.give(buffer)
            raise
        self._hand_over(name, merged, buffer, shape)
        return change
