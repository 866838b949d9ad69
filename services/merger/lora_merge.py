"""Merges a PEFT LoRA/rsLoRA/DoRA adapter into a safetensors base model, exactly.

Pure domain code: torch, safetensors and json only. It never imports
transformers or peft, so a merge needs neither a model class nor a GPU.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.adapter_files import ADAPTER_WEIGHTS
from services.merger.classifier import ClassifierOutput
from services.merger.lora_stream import TensorStream
from services.merger.merge_plan import MergePlan, ModuleMerge, plan_merge
from services.merger.output import (
    DEFAULT_MAX_SHARD_SIZE,
    WrittenFiles,
    all_finite,
    copy_side_files,
    max_abs_change,
    model_writer,
    torch_threads,
)
from services.merger.safetensors_io import ModelLayout, TensorReader, tensor_shapes

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "OUTPUT_DTYPES",
    "MergePlan",
    "MergeStats",
    "copy_side_files",
    "execute_merge",
    "merge_adapter",
    "merged_weight",
    "plan_merge",
]

OUTPUT_DTYPES: dict[str, torch.dtype | None] = {
    "same": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

TensorCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class MergeStats:
    tensors_merged: int
    tensors_total: int
    tensors_replaced: int
    max_abs_delta: float
    seconds: float
    provenance: dict[str, Any]
    written: WrittenFiles | None = None


def merged_weight(
    weight: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    scale: float,
    transposed: bool,
    magnitude: torch.Tensor | None = None,
) -> torch.Tensor:
    """W + scale*(B@A) in float32; with DoRA rescaled row-wise as PEFT merges it.

    DoRA's norm is taken per output feature of W + scale*BA in the (out, in)
    orientation, then m/norm multiplies each output feature - the same for
    nn.Linear, gpt2's Conv1D (stored (in, out)) and embeddings. The same
    operations as PEFT's merge in the same order (so float32 results match it
    bit for bit), done in place so a merge holds about two copies of W.
    """
    delta = b.to(torch.float32) @ a.to(torch.float32)  # (out, in)
    delta.mul_(scale)
    if transposed:
        delta = delta.T.contiguous()
    combined = delta.add_(weight.to(torch.float32))  # W + delta, exactly
    if magnitude is None:
        return combined
    norm = torch.linalg.norm(combined.T if transposed else combined, dim=1)
    factor = (magnitude.to(torch.float32) / norm).view(-1, 1)
    return combined.mul_(factor.T if transposed else factor)


def _merged_tensor(
    plan: MergePlan, name: str, tensor: torch.Tensor, adapter: Any
) -> torch.Tensor | None:
    """The new value of base tensor `name`, or None when it stays as it is."""
    replaced = name in plan.replacements
    if replaced:
        tensor = adapter.get_tensor(plan.replacements[name])
    if name in plan.merges:
        m = plan.merges[name]
        magnitude = adapter.get_tensor(m.magnitude_key) if m.magnitude_key else None
        return merged_weight(
            tensor,
            adapter.get_tensor(m.a_key),
            adapter.get_tensor(m.b_key),
            m.scale,
            m.transposed,
            magnitude,
        )
    if name in plan.bias_merges:
        m = plan.bias_merges[name]
        extra = adapter.get_tensor(m.bias_key).to(torch.float32) * m.scale
        return tensor.to(torch.float32) + extra
    return tensor if replaced else None


def output_specs(
    layout: ModelLayout, output_dtype: str
) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(name, dtype, shape) of every output tensor, in the base's file order."""
    if output_dtype not in OUTPUT_DTYPES:
        raise InvalidArgument(
            f"output dtype {output_dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}",
            field="output_dtype",
        )
    target = OUTPUT_DTYPES[output_dtype]
    return [
        (t.name, target if target and t.dtype.is_floating_point else t.dtype, t.shape)
        for infos in layout.shards.values()
        for t in infos
    ]


def header_metadata(provenance: dict[str, Any]) -> dict[str, str]:
    """Provenance as safetensors header metadata (string values only)."""
    return {
        "format": "pt",
        **{
            f"merge_{k}": v if isinstance(v, str) else json.dumps(v)
            for k, v in provenance.items()
        },
    }


def plan_specs(
    plan: MergePlan, output_dtype: str
) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """The merge's output tensors: the base's, or a classifier's (the base's
    without the LM head, then the head, in the base's main float dtype)."""
    specs = output_specs(plan.layout, output_dtype)
    classifier = plan.classifier
    if classifier is None:
        return specs
    dropped = set(classifier.dropped)
    floats = Counter(d for _, d, _ in specs if d.is_floating_point)
    dtype = floats.most_common(1)[0][0] if floats else torch.float32
    shapes = tensor_shapes(plan.adapter_dir / ADAPTER_WEIGHTS)
    head = [(name, dtype, shapes[key]) for name, key in classifier.head]
    return [s for s in specs if s[0] not in dropped] + head


class LayoutReader:
    """Reads tensors of a ModelLayout by name, one open file per shard."""

    def __init__(self, layout: ModelLayout, stack: ExitStack) -> None:
        self._layout = layout
        self._tensors = layout.tensors
        self._stack = stack
        self._handles: dict[str, TensorReader] = {}

    def reader(self, name: str) -> TensorReader:
        """The open shard that holds tensor `name`."""
        file = self._tensors[name].file
        if file not in self._handles:
            self._handles[file] = self._stack.enter_context(
                TensorReader(self._layout.directory / file)
            )
        return self._handles[file]

    def get_tensor(self, name: str) -> torch.Tensor:
        return self.reader(name).get_tensor(name)


def _plain(m: ModuleMerge) -> bool:
    """A LoRA/rsLoRA merge of an (out, in) weight: TensorStream.merge's case."""
    return m.magnitude_key is None and not m.transposed


def _check_finite(name: str, values: torch.Tensor, output_dtype: str) -> None:
    if not all_finite(values):
        raise FailedPrecondition(
            f"merged tensor {name} contains NaN or Inf values as "
            f"{output_dtype}; the adapter is broken or the weights "
            "overflow the output dtype"
        )


def merge_threads() -> int:
    """torch threads for a merge: the cores this process may use, less the two
    that hash and write the output (services/merger/write_lanes.py), at least 1.

    Idle OpenMP threads spin, so more threads than free cores is slower, not
    faster (SmolLM2-135M on a busy 2-core machine: 1.7 s with one thread,
    6.7-15 s with two).
    """
    affinity = getattr(os, "sched_getaffinity", None)  # Linux
    cores = len(affinity(0)) if affinity else os.cpu_count() or 1
    return max(1, cores - 2)


def execute_merge(
    plan: MergePlan,
    out_dir: Path,
    *,
    output_dtype: str = "same",
    adapter_digest: str = "",
    base_digest: str = "",
    on_tensor: TensorCallback | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
) -> MergeStats:
    """Writes the merged model into `out_dir`, a few MiB in memory at a time.

    `on_tensor(done, total, name)` runs after each tensor; raising from it (e.g.
    on cancellation) stops the merge. Every file is fsynced and hashed as it is
    written (`MergeStats.written`).
    """
    started = time.monotonic()
    specs = plan_specs(plan, output_dtype)
    dtypes = {name: dtype for name, dtype, _ in specs}
    head = plan.classifier.head_keys if plan.classifier else {}
    touched = {*plan.merges, *plan.bias_merges, *plan.replacements, *head}
    provenance = plan.provenance(adapter_digest, base_digest)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(specs)
    done = merged = replaced = 0
    max_delta = 0.0

    def check(name: str, values: torch.Tensor) -> None:
        _check_finite(name, values, output_dtype)

    with (
        torch_threads(merge_threads()),
        ExitStack() as stack,
        model_writer(
            out_dir, specs, header_metadata(provenance), max_shard_size
        ) as writer,
    ):
        adapter = stack.enter_context(TensorReader(plan.adapter_dir / ADAPTER_WEIGHTS))
        base = LayoutReader(plan.layout, stack)
        stream = TensorStream(writer, check)
        for name in writer.order:
            m = plan.merges.get(name)
            if name not in touched and base.reader(name).locate(name)[3]:
                # left as it is: its bytes go through without being decoded
                stream.copy(base.reader(name), name, dtypes[name])
            elif m and name not in plan.replacements and _plain(m):
                a, b = adapter.get_tensor(m.a_key), adapter.get_tensor(m.b_key)
                change = stream.merge(
                    base.reader(name), name, dtypes[name], a, b, m.scale
                )
                max_delta = max(max_delta, change)
                merged += 1
            else:
                if name in head:  # a classifier's head: from the adapter, as trained
                    tensor, new = adapter.get_tensor(head[name]), None
                    replaced += 1
                else:
                    tensor = base.get_tensor(name)
                    new = _merged_tensor(plan, name, tensor, adapter)
                if new is not None:
                    if new.numel():
                        max_delta = max(max_delta, max_abs_change(new, tensor))
                    adapted = name in plan.merges or name in plan.bias_merges
                    merged += adapted
                    replaced += not adapted
                    tensor = new
                tensor = tensor.to(dtypes[name])
                check(name, tensor)
                writer.write(name, tensor)
                del tensor, new
            done += 1
            if on_tensor is not None:
                on_tensor(done, total, name)
        written = writer.close()
    config = plan.classifier.config_updates() if plan.classifier else None
    files = {
        **written.files,
        **copy_side_files(plan.base_dir, out_dir, output_dtype, config),
    }
    return MergeStats(
        tensors_merged=merged,
        tensors_total=total,
        tensors_replaced=replaced,
        max_abs_delta=max_delta,
        seconds=time.monotonic() - started,
        provenance=provenance,
        written=WrittenFiles(files, written.shards, written.total_size),
    )


def merge_adapter(
    adapter_dir: Path,
    base_dir: Path,
    out_dir: Path,
    *,
    output_dtype: str = "same",
    on_tensor: TensorCallback | None = None,
    adapter_digest: str = "",
    base_digest: str = "",
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    classifier: ClassifierOutput | None = None,
) -> MergeStats:
    """plan_merge + execute_merge: checks everything first, then writes.
    `classifier`: a classification adapter's (classifier.plan_classifier)."""
    plan = plan_merge(adapter_dir, base_dir, classifier)
    return execute_merge(
        plan,
        out_dir,
        output_dtype=output_dtype,
        on_tensor=on_tensor,
        adapter_digest=adapter_digest,
        base_digest=base_digest,
        max_shard_size=max_shard_size,
    )
