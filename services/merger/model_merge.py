"""Merges of whole models (linear, TIES, DARE, SLERP, ...) streamed tensor by tensor.

Every input is read one tensor at a time and the output is written one tensor at
a time, in the reference model's shard layout, so peak memory is a few tensors
whatever the model size. Like lora_merge, it imports neither transformers nor peft.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from services.common.errors import FailedPrecondition
from services.merger.lora_merge import (
    LayoutReader,
    MergeStats,
    TensorCallback,
    header_metadata,
    output_specs,
)
from services.merger.methods import MergeMethod, MergeParams, TensorContext
from services.merger.output import (
    DEFAULT_MAX_SHARD_SIZE,
    WrittenFiles,
    all_finite,
    copy_side_files,
    max_abs_change,
    model_writer,
    torch_threads,
)
from services.merger.safetensors_io import ModelLayout, read_layout


@dataclass(frozen=True)
class ModelMergePlan:
    """Checked inputs: same tensor names and shapes everywhere."""

    method: MergeMethod
    params: MergeParams
    base: ModelLayout | None
    inputs: list[ModelLayout]
    num_layers: int

    @property
    def reference(self) -> ModelLayout:
        return self.base or self.inputs[0]


def _num_layers(model_dir: Path) -> int:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(config.get("num_hidden_layers") or config.get("n_layer") or 0)


def plan_model_merge(
    method: MergeMethod,
    params: MergeParams,
    base_dir: Path | None,
    input_dirs: list[Path],
) -> ModelMergePlan:
    """Reads headers only; refuses inputs whose tensors differ in name or shape."""
    method.check_inputs(len(input_dirs), base_dir is not None)
    base = read_layout(base_dir) if base_dir is not None else None
    inputs = [read_layout(d) for d in input_dirs]
    reference = base or inputs[0]
    want = reference.tensors
    for layout in inputs:
        have = layout.tensors
        missing = sorted(set(want) - set(have))
        if missing:
            raise FailedPrecondition(
                f"{layout.directory.name} lacks tensor {missing[0]} that "
                f"{reference.directory.name} has ({len(missing)} missing); models "
                "merged together must share an architecture"
            )
        for name, info in want.items():
            if have[name].shape != info.shape:
                raise FailedPrecondition(
                    f"tensor {name} is {list(have[name].shape)} in "
                    f"{layout.directory.name} but {list(info.shape)} in "
                    f"{reference.directory.name}; models merged together must share "
                    "an architecture"
                )
    return ModelMergePlan(
        method, params, base, inputs, _num_layers(reference.directory)
    )


def execute_model_merge(
    plan: ModelMergePlan,
    out_dir: Path,
    *,
    output_dtype: str = "same",
    on_tensor: TensorCallback | None = None,
    provenance: dict[str, Any] | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
) -> MergeStats:
    """Writes the merged model to `out_dir`; NaN/Inf in any output is refused."""
    started = time.monotonic()
    reference = plan.reference
    specs = output_specs(reference, output_dtype)
    dtypes = {name: dtype for name, dtype, _ in specs}
    provenance = {"method": plan.method.name, **(provenance or {})}
    total = len(specs)
    done = merged_count = 0
    max_delta = 0.0
    out_dir.mkdir(parents=True, exist_ok=True)
    with (
        torch_threads(1),
        ExitStack() as stack,
        model_writer(
            out_dir, specs, header_metadata(provenance), max_shard_size
        ) as writer,
    ):
        ref = LayoutReader(reference, stack)
        base = LayoutReader(plan.base, stack) if plan.base is not None else None
        inputs = [LayoutReader(m, stack) for m in plan.inputs]
        for name in writer.order:
            original = ref.get_tensor(name)
            tensor = original
            if original.is_floating_point():
                tensor = plan.method.merge(
                    base.get_tensor(name).to(torch.float32) if base else None,
                    [m.get_tensor(name).to(torch.float32) for m in inputs],
                    plan.params,
                    TensorContext(name, plan.num_layers),
                )
                if tensor.numel():
                    max_delta = max(max_delta, max_abs_change(tensor, original))
                merged_count += 1
            tensor = tensor.to(dtypes[name])
            if not all_finite(tensor):
                raise FailedPrecondition(
                    f"merged tensor {name} contains NaN or Inf values as "
                    f"{output_dtype}; check the inputs and the method's parameters"
                )
            writer.write(name, tensor)
            del tensor, original
            done += 1
            if on_tensor is not None:
                on_tensor(done, total, name)
        written = writer.close()
    files = {
        **written.files,
        **copy_side_files(reference.directory, out_dir, output_dtype),
    }
    return MergeStats(
        tensors_merged=merged_count,
        tensors_total=total,
        tensors_replaced=0,
        max_abs_delta=max_delta,
        seconds=time.monotonic() - started,
        provenance=provenance,
        written=WrittenFiles(files, written.shards, written.total_size),
    )
