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
    LayoutReader,
    MergeStats,
    TensorCallback,
    header_metadata,
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
from services.merger.slices import (
    OutputSlice,
    SliceSource,
    StackedPlan,
    TensorJob,
    TensorSource,
    layer_tensors,
    plan_stack,
)
from services.merger.tokenizer_files import write_tokenizer


@dataclass(frozen=True)
class ModelMergePlan:
    """Checked inputs: same tensor names and shapes everywhere."""

    method: MergeMethod
    params: MergeParams
    base: ModelLayout | None
    inputs: list[ModelLayout]
    num_layers: int
    # A recipe's slices (layer stacking); None merges whole models tensor by
    # tensor under the same names.
    stack: StackedPlan | None = None
    # The model whose tokenizer the output takes (None: the reference's) and
    # the chat template text to write ("" keeps the tokenizer's own).
    tokenizer_source: Path | None = None
    chat_template: str = ""

    @property
    def reference(self) -> ModelLayout:
        return self.base or self.inputs[0]

    @property
    def output_layers(self) -> int:
        return self.stack.num_layers if self.stack else self.num_layers

    def jobs(self) -> list[TensorJob]:
        """One job per output tensor, in the reference's file order."""
        if self.stack is not None:
            return list(self.stack.jobs)
        return [
            TensorJob(
                name,
                TensorSource(self.base, name) if self.base else None,
                tuple(TensorSource(m, name) for m in self.inputs),
                self.params,
            )
            for infos in self.reference.shards.values()
            for name in (t.name for t in infos)
        ]


def num_layers_of(model_dir: Path) -> int:
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
        method, params, base, inputs, num_layers_of(reference.directory)
    )


def plan_stacked_merge(
    method: MergeMethod,
    slices: list[dict[str, Any]],
    model_dirs: dict[str, Path],
    base_dir: Path | None,
    input_dirs: list[Path],
) -> ModelMergePlan:
    """A layer-stack plan from a request's slices, whose sources name models
    by the keys of `model_dirs` (registry ids, or folders in tests)."""
    layouts = {key: read_layout(path) for key, path in model_dirs.items()}

    def source(entry: dict[str, Any]) -> SliceSource:
        start, end = entry["layer_range"]
        return SliceSource(layouts[entry["model"]], int(start), int(end))

    output = [
        OutputSlice(
            source(s["base"]) if s.get("base") else None,
            tuple(source(e) for e in s["inputs"]),
            dict(s.get("params") or {}),
        )
        for s in slices
    ]
    # Counted from the tensors, not config.json: a range must name layers
    # that exist in the files.
    layers = {str(lay.directory): len(layer_tensors(lay)) for lay in layouts.values()}
    base = read_layout(base_dir) if base_dir is not None else None
    inputs = [read_layout(d) for d in input_dirs]
    reference = base or inputs[0]
    try:
        config = json.loads((reference.directory / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    stack = plan_stack(method, output, layers, config)
    first_params = stack.jobs[0].params if stack.jobs else None
    return ModelMergePlan(
        method,
        first_params,  # type: ignore[arg-type]
        base,
        inputs,
        num_layers_of(reference.directory),
        stack,
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
    if output_dtype not in OUTPUT_DTYPES:
        raise InvalidArgument(
            f"output dtype {output_dtype!r} is not one of {', '.join(OUTPUT_DTYPES)}",
            field="output_dtype",
        )
    target = OUTPUT_DTYPES[output_dtype]
    jobs = {job.out: job for job in plan.jobs()}
    specs = []
    for job in jobs.values():
        lead = job.base or job.inputs[0]
        info = lead.layout.tensors[lead.name]
        dtype = target if target and info.dtype.is_floating_point else info.dtype
        specs.append((job.out, dtype, info.shape))
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
        readers: dict[Path, LayoutReader] = {}

        def read(source: TensorSource) -> torch.Tensor:
            key = source.layout.directory
            if key not in readers:
                readers[key] = LayoutReader(source.layout, stack)
            return readers[key].get_tensor(source.name)

        for name in writer.order:
            job = jobs[name]
            original = read(job.base or job.inputs[0])
            tensor = original
            if original.is_floating_point():
                tensor = plan.method.merge(
                    read(job.base).to(torch.float32) if job.base else None,
                    [read(m).to(torch.float32) for m in job.inputs],
                    job.params,
                    TensorContext(name, plan.output_layers, t=job.t),
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
    side = copy_side_files(
        reference.directory,
        out_dir,
        output_dtype,
        plan.stack.config_updates if plan.stack else None,
    )
    side = write_tokenizer(out_dir, side, plan.tokenizer_source, plan.chat_template)
    files = {**written.files, **side}
    return MergeStats(
        tensors_merged=merged_count,
        tensors_total=total,
        tensors_replaced=0,
        max_abs_delta=max_delta,
        seconds=time.monotonic() - started,
        provenance=provenance,
        written=WrittenFiles(files, written.shards, written.total_size),
    )
