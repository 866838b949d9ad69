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

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.lora_merge import (
    OUTPUT_DTYPES,
    MergeStats,
    TensorCallback,
    copy_side_files,
)
from services.merger.methods import MergeMethod, MergeParams, TensorContext
from services.merger.safetensors_io import (
    INDEX_NAME,
    ModelLayout,
    TensorReader,
    nbytes,
    read_layout,
    streaming_writer,
)


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
) -> MergeStats:
    """Writes the merged model to `out_dir`; NaN/Inf in any output is refused."""
    if output_dtype not in OUTPUT_DTYPES:
        raise InvalidArgument(
            f"output dtype {output_dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}",
            field="output_dtype",
        )
    started = time.monotonic()
    target = OUTPUT_DTYPES[output_dtype]
    provenance = {"method": plan.method.name, **(provenance or {})}
    metadata = {
        "format": "pt",
        **{
            f"merge_{k}": v if isinstance(v, str) else json.dumps(v)
            for k, v in provenance.items()
        },
    }
    reference = plan.reference
    total = len(reference.tensors)
    done = merged_count = total_size = 0
    max_delta = 0.0
    out_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        handles: dict[Path, Any] = {}

        def read(layout: ModelLayout, name: str) -> torch.Tensor:
            path = layout.directory / layout.tensors[name].file
            if path not in handles:
                handles[path] = stack.enter_context(TensorReader(path))
            return handles[path].get_tensor(name)

        for shard, infos in reference.shards.items():
            specs = [
                (
                    t.name,
                    target if target and t.dtype.is_floating_point else t.dtype,
                    t.shape,
                )
                for t in infos
            ]
            total_size += sum(nbytes(d, s) for _, d, s in specs)
            with streaming_writer(out_dir / shard, specs, metadata) as writer:
                for name, dtype, _ in specs:
                    original = read(reference, name)
                    tensor = original
                    if original.is_floating_point():
                        base = (
                            read(plan.base, name).to(torch.float32)
                            if plan.base is not None
                            else None
                        )
                        inputs = [read(m, name).to(torch.float32) for m in plan.inputs]
                        ctx = TensorContext(name, plan.num_layers)
                        tensor = plan.method.merge(base, inputs, plan.params, ctx)
                        change = (tensor - original.to(torch.float32)).abs()
                        if change.numel():
                            max_delta = max(max_delta, float(change.max()))
                        merged_count += 1
                        if not torch.isfinite(tensor.to(dtype)).all():
                            raise FailedPrecondition(
                                f"merged tensor {name} contains NaN or Inf values as "
                                f"{output_dtype}; check the inputs and the "
                                "method's parameters"
                            )
                    writer.write(name, tensor.to(dtype))
                    done += 1
                    if on_tensor is not None:
                        on_tensor(done, total, name)
    if reference.index is not None:
        index = dict(reference.index)
        index["metadata"] = {**index.get("metadata", {}), "total_size": total_size}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    copy_side_files(reference.directory, out_dir, output_dtype)
    return MergeStats(
        tensors_merged=merged_count,
        tensors_total=total,
        tensors_replaced=0,
        max_abs_delta=max_delta,
        seconds=time.monotonic() - started,
        provenance=provenance,
    )
