"""Merges a PEFT LoRA/rsLoRA/DoRA adapter into a safetensors base model, exactly.

Pure domain code: torch, safetensors and json only. It never imports
transformers or peft, so a merge needs neither a model class nor a GPU.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.adapter_files import ADAPTER_WEIGHTS
from services.merger.merge_plan import MergePlan, plan_merge
from services.merger.safetensors_io import (
    INDEX_NAME,
    TensorReader,
    nbytes,
    streaming_writer,
)

__all__ = [
    "OUTPUT_DTYPES",
    "MergePlan",
    "MergeStats",
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
_SKIPPED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt")

TensorCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class MergeStats:
    tensors_merged: int
    tensors_total: int
    tensors_replaced: int
    max_abs_delta: float
    seconds: float
    provenance: dict[str, Any]


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
    nn.Linear, gpt2's Conv1D (stored (in, out)) and embeddings.
    """
    w = weight.to(torch.float32)
    delta = (b.to(torch.float32) @ a.to(torch.float32)) * scale  # (out, in)
    if transposed:
        delta = delta.T
    if magnitude is None:
        return w + delta
    combined = w + delta
    norm = torch.linalg.norm(combined.T if transposed else combined, dim=1)
    factor = (magnitude.to(torch.float32) / norm).view(-1, 1)
    return (factor.T if transposed else factor) * combined


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


def copy_side_files(base_dir: Path, out_dir: Path, dtype_name: str) -> None:
    """Config, tokenizer, generation config, chat template: all but the weights."""
    for f in sorted(base_dir.iterdir()):
        if (
            f.is_file()
            and not f.name.startswith(".")
            and f.name != INDEX_NAME
            and not f.name.endswith(_SKIPPED_SUFFIXES)
        ):
            shutil.copyfile(f, out_dir / f.name)  # store files are read-only
    if dtype_name != "same":
        config = json.loads((out_dir / "config.json").read_text())
        keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]
        config.update({k: dtype_name for k in keys})
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def execute_merge(
    plan: MergePlan,
    out_dir: Path,
    *,
    output_dtype: str = "same",
    adapter_digest: str = "",
    base_digest: str = "",
    on_tensor: TensorCallback | None = None,
) -> MergeStats:
    """Writes the merged model into `out_dir`, one tensor in memory at a time.

    `on_tensor(done, total, name)` runs after each tensor; raising from it (e.g.
    on cancellation) stops the merge.
    """
    if output_dtype not in OUTPUT_DTYPES:
        raise InvalidArgument(
            f"output dtype {output_dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}",
            field="output_dtype",
        )
    started = time.monotonic()
    target = OUTPUT_DTYPES[output_dtype]
    provenance = plan.provenance(adapter_digest, base_digest)
    metadata = {
        "format": "pt",
        **{
            f"merge_{k}": v if isinstance(v, str) else json.dumps(v)
            for k, v in provenance.items()
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(len(infos) for infos in plan.layout.shards.values())
    done = merged = replaced = total_size = 0
    max_delta = 0.0
    with TensorReader(plan.adapter_dir / ADAPTER_WEIGHTS) as adapter:
        for shard, infos in plan.layout.shards.items():
            specs = [
                (
                    t.name,
                    target if target and t.dtype.is_floating_point else t.dtype,
                    t.shape,
                )
                for t in infos
            ]
            total_size += sum(nbytes(dtype, shape) for _, dtype, shape in specs)
            with (
                TensorReader(plan.base_dir / shard) as base,
                streaming_writer(out_dir / shard, specs, metadata) as writer,
            ):
                for name, dtype, _ in specs:
                    tensor = base.get_tensor(name)
                    new = _merged_tensor(plan, name, tensor, adapter)
                    if new is not None:
                        change = (
                            new.to(torch.float32) - tensor.to(torch.float32)
                        ).abs()
                        max_delta = max(
                            max_delta, float(change.max()) if change.numel() else 0
                        )
                        adapted = name in plan.merges or name in plan.bias_merges
                        merged += adapted
                        replaced += not adapted
                        tensor = new
                    tensor = tensor.to(dtype)
                    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                        raise FailedPrecondition(
                            f"merged tensor {name} contains NaN or Inf values as "
                            f"{output_dtype}; the adapter is broken or the weights "
                            "overflow the output dtype"
                        )
                    writer.write(name, tensor)
                    done += 1
                    if on_tensor is not None:
                        on_tensor(done, total, name)
    if plan.layout.index is not None:
        index = dict(plan.layout.index)
        index["metadata"] = {**index.get("metadata", {}), "total_size": total_size}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    copy_side_files(plan.base_dir, out_dir, output_dtype)
    return MergeStats(
        tensors_merged=merged,
        tensors_total=total,
        tensors_replaced=replaced,
        max_abs_delta=max_delta,
        seconds=time.monotonic() - started,
        provenance=provenance,
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
) -> MergeStats:
    """plan_merge + execute_merge: checks everything first, then writes."""
    plan = plan_merge(adapter_dir, base_dir)
    return execute_merge(
        plan,
        out_dir,
        output_dtype=output_dtype,
        on_tensor=on_tensor,
        adapter_digest=adapter_digest,
        base_digest=base_digest,
    )
