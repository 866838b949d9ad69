"""Spherical linear interpolation between two models, with a global or per-layer t.

Each tensor is one vector on its great circle (as mergekit 0.1.5 does: its
batch axis runs over tensors). `t` takes a number, a gradient over the layers
or per-tensor filters (services/merger/settings.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from services.common.errors import InvalidArgument
from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    check_unit,
    param,
)
from services.merger.settings import (
    Setting,
    check_setting,
    numbers_in,
    value_at,
)

# Below this angle the vectors are (anti)parallel and slerp degenerates to lerp.
PARALLEL_DOT = 0.9995


@dataclass
class SlerpParams(MergeParams):
    t: Setting = param(
        help="interpolation factor in [0, 1]: 0 gives the first model, 1 the second"
    )
    t_by_layer: list[float] = param(
        [],
        help="optional t values spread evenly over the layers (linearly "
        "interpolated); overrides t for tensors inside a layer",
    )

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        if self.weights:
            raise InvalidArgument("slerp takes t, not weights", field="params.weights")
        self.t = check_setting("t", self.t, help="in [0, 1]")
        for value in numbers_in(self.t):
            check_unit("t", value)
        for value in self.t_by_layer:
            check_unit("t_by_layer", value)

    def t_for(self, ctx: TensorContext) -> float:
        layer = ctx.layer
        if (
            not self.t_by_layer
            or layer is None
            or (ctx.t is None and ctx.num_layers <= 1)
        ):
            return value_at(self.t, "t", ctx.name, ctx.position)
        if len(self.t_by_layer) == 1:
            return self.t_by_layer[0]
        pos = ctx.position * (len(self.t_by_layer) - 1)
        lo = min(int(math.floor(pos)), len(self.t_by_layer) - 2)
        frac = pos - lo
        return self.t_by_layer[lo] * (1 - frac) + self.t_by_layer[lo + 1] * frac


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Interpolates along the great circle between v0 and v1 (as flat vectors)."""
    a, b = v0.flatten().double(), v1.flatten().double()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return ((1 - t) * v0 + t * v1).to(v0.dtype)
    dot = torch.clamp((a / na) @ (b / nb), -1.0, 1.0)
    if abs(float(dot)) > PARALLEL_DOT:
        return ((1 - t) * v0 + t * v1).to(v0.dtype)
    omega = torch.arccos(dot)
    sin = torch.sin(omega)
    mixed = (torch.sin((1 - t) * omega) / sin) * a + (torch.sin(t * omega) / sin) * b
    return mixed.view_as(v0).to(v0.dtype)


class Slerp(MergeMethod):
    name = "slerp"
    summary = "great-circle interpolation between exactly two models at t"
    Params = SlerpParams
    needs_base = False
    min_inputs = 2
    max_inputs = 2

    def merge(self, base, inputs, params: SlerpParams, ctx: TensorContext):
        return slerp(params.t_for(ctx), inputs[0], inputs[1])
