"""Layer stacking: a recipe's `slices` as a list of per-tensor merge jobs.

mergekit builds the output model slice by slice: each output slice takes the
same number of layers from every one of its sources (`layer_range: [a, b]`),
merges them with the recipe's method, and appends them; the output has as many
layers as the slices together. The tensors outside the layers come from the
first slice's sources (embeddings) and the last slice's (final norm, head),
at t = 0. Gradients run from 0 to 1 within each slice. This module does the
same, reading headers only, so a bad slice fails before any tensor is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.methods import MergeMethod, MergeParams, parse_params
from services.merger.safetensors_io import ModelLayout

# The first layer index in a tensor name: model.layers.3.mlp... -> 3.
_LAYER = re.compile(r"(^|\.)(layers|h|blocks|layer)\.(\d+)\.")
# Tensors outside the layers that come before them (embeddings); the rest
# (final norm, LM head) come after.
_PRE = ("embed", "wte", "wpe")


@dataclass(frozen=True)
class TensorSource:
    """One tensor of one input model."""

    layout: ModelLayout
    name: str


@dataclass(frozen=True)
class TensorJob:
    """How one output tensor is made: the method over these sources."""

    out: str
    base: TensorSource | None
    inputs: tuple[TensorSource, ...]
    params: MergeParams
    # mergekit's t for gradients; None derives it from the layer index.
    t: float | None = None


@dataclass(frozen=True)
class SliceSource:
    layout: ModelLayout
    start: int
    end: int


@dataclass(frozen=True)
class OutputSlice:
    """One slice of the output: a base (if the method uses one) and inputs,
    all with ranges of the same length, and the slice's parameters."""

    base: SliceSource | None
    inputs: tuple[SliceSource, ...]
    params: dict[str, Any]


@dataclass(frozen=True)
class StackedPlan:
    jobs: tuple[TensorJob, ...]
    num_layers: int
    # config.json changes: the new layer count, per-layer lists remapped.
    config_updates: dict[str, Any]


def split_layer_name(name: str) -> tuple[str, int, str] | None:
    """(prefix, layer, suffix) of a tensor inside a layer, else None."""
    match = _LAYER.search(name)
    if match is None:
        return None
    head = name[: match.end(2) + 1]
    return head, int(match.group(3)), name[match.end() :]


def layer_tensors(layout: ModelLayout) -> dict[int, dict[str, str]]:
    """layer index -> {suffix: full tensor name}."""
    layers: dict[int, dict[str, str]] = {}
    for name in layout.tensors:
        parts = split_layer_name(name)
        if parts is not None:
            layers.setdefault(parts[1], {})[parts[2]] = name
    return layers


def _check_range(source: SliceSource, count: int, where: str) -> None:
    if not 0 <= source.start < source.end <= count:
        raise InvalidArgument(
            f"{where}.layer_range [{source.start}, {source.end}] does not fit "
            f"{source.layout.directory.name}, which has {count} layers (ranges "
            "are [first, end) with 0 <= first < end <= layers)",
            field="recipe",
        )


def _same_shapes(job: TensorJob) -> None:
    sources = ([job.base] if job.base else []) + list(job.inputs)
    first = sources[0].layout.tensors[sources[0].name]
    for s in sources[1:]:
        info = s.layout.tensors[s.name]
        if info.shape != first.shape:
            raise FailedPrecondition(
                f"output tensor {job.out} would merge {s.name} "
                f"{list(info.shape)} of {s.layout.directory.name} with "
                f"{sources[0].name} {list(first.shape)} of "
                f"{sources[0].layout.directory.name}; models merged together "
                "must share an architecture"
            )


def _layer_source(
    src: SliceSource,
    offset: int,
    suffix: str,
    layer_maps: dict[str, dict[int, dict[str, str]]],
    index: int,
) -> TensorSource:
    layer = layer_maps[str(src.layout.directory)][src.start + offset]
    if suffix not in layer:
        raise FailedPrecondition(
            f"slices[{index}]: layer {src.start + offset} of "
            f"{src.layout.directory.name} has no {suffix}; models stacked "
            "together must share an architecture"
        )
    return TensorSource(src.layout, layer[suffix])


def _outside_jobs(
    names: list[str], s: OutputSlice, params: MergeParams
) -> list[TensorJob]:
    jobs = []
    for name in names:
        for src in [s.base, *s.inputs]:
            if src is not None and name not in src.layout.tensors:
                raise FailedPrecondition(
                    f"{src.layout.directory.name} lacks tensor {name}; models "
                    "stacked together must share an architecture"
                )
        jobs.append(
            TensorJob(
                name,
                TensorSource(s.base.layout, name) if s.base else None,
                tuple(TensorSource(i.layout, name) for i in s.inputs),
                params,
                0.0,
            )
        )
    return jobs


def plan_stack(
    method: MergeMethod,
    slices: list[OutputSlice],
    num_layers: dict[str, int],
    config: dict[str, Any],
) -> StackedPlan:
    """The jobs of a layer stack; `num_layers` maps each model directory to
    its layer count, `config` is the reference model's config.json."""
    if not slices:
        raise InvalidArgument("slices is empty", field="recipe")
    slice_params = []
    for i, s in enumerate(slices):
        where = f"slices[{i}]"
        method.check_inputs(len(s.inputs), s.base is not None)
        for j, src in enumerate([*([s.base] if s.base else []), *s.inputs]):
            _check_range(src, num_layers[str(src.layout.directory)], f"{where}[{j}]")
        lengths = {src.end - src.start for src in [s.base, *s.inputs] if src}
        if len(lengths) != 1:
            raise InvalidArgument(
                f"{where}: every source must take the same number of layers, "
                f"got ranges of {sorted(lengths)} layers",
                field="recipe",
            )
        slice_params.append(parse_params(method, dict(s.params), len(s.inputs)))
    first = slices[0].inputs[0].layout
    outside = [n for n in first.tensors if split_layer_name(n) is None]
    pre = [n for n in outside if any(p in n for p in _PRE)]
    post = [n for n in outside if n not in pre]
    jobs = _outside_jobs(pre, slices[0], slice_params[0])
    layer_maps: dict[str, dict[int, dict[str, str]]] = {}
    source_layers: list[int] = []  # the reference layer each output layer copies
    out_layer = 0
    for i, (s, params) in enumerate(zip(slices, slice_params, strict=True)):
        sources = [src for src in [s.base, *s.inputs] if src is not None]
        for src in sources:
            key = str(src.layout.directory)
            if key not in layer_maps:
                layer_maps[key] = layer_tensors(src.layout)
        length = sources[0].end - sources[0].start
        for offset in range(length):
            t = offset / (length - 1) if length > 1 else 1.0
            lead = sources[0]
            suffixes = layer_maps[str(lead.layout.directory)][lead.start + offset]
            for suffix, lead_name in suffixes.items():
                head = split_layer_name(lead_name)
                assert head is not None
                out = f"{head[0]}{out_layer}.{suffix}"

                jobs.append(
                    TensorJob(
                        out,
                        _layer_source(s.base, offset, suffix, layer_maps, i)
                        if s.base
                        else None,
                        tuple(
                            _layer_source(src, offset, suffix, layer_maps, i)
                            for src in s.inputs
                        ),
                        params,
                        t,
                    )
                )
            source_layers.append(lead.start + offset)
            out_layer += 1
    jobs += _outside_jobs(post, slices[-1], slice_params[-1])
    for job in jobs:
        _same_shapes(job)
    return StackedPlan(tuple(jobs), out_layer, _config_updates(config, source_layers))


def _config_updates(config: dict[str, Any], source_layers: list[int]) -> dict[str, Any]:
    """The new layer count under the config's own key, and every per-layer
    list (Qwen's `layer_types`, ...) rebuilt from the layers actually used."""
    count_key = next(
        (k for k in ("num_hidden_layers", "n_layer", "num_layers") if k in config),
        "num_hidden_layers",
    )
    old = int(config.get(count_key) or 0)
    updates: dict[str, Any] = {count_key: len(source_layers)}
    for key, value in config.items():
        if isinstance(value, list) and old and len(value) == old:
            updates[key] = [value[i] for i in source_layers]
    return updates
