"""NuSLERP: SLERP of two models (or of their task vectors around a base),
with t from the two weights and a choice of what one great circle spans: the
whole tensor (flatten, the default), each row, or each column."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.common.errors import InvalidArgument
from services.merger.methods.base import MergeMethod, TensorContext, param
from services.merger.methods.weighted import GradedWeightsParams


@dataclass
class NuSlerpParams(GradedWeightsParams):
    nuslerp_flatten: bool = param(True, help="one great circle per tensor")
    nuslerp_row_wise: bool = param(
        False, help="without flatten: per row (true) or per column (false)"
    )

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        if not self.weights:
            raise InvalidArgument(
                "nuslerp needs weights, one per input (t = w2 / (w1 + w2))",
                field="params.weights",
            )


def nuslerp(t: float, v0, v1, dim: int = -1, eps: float = 1e-8, flatten=False):
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)

    def unit(x):
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))
    sin = torch.sin(theta)
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(shape)


class NuSlerp(MergeMethod):
    name = "nuslerp"
    summary = "slerp of two models (or task vectors around a base), t from weights"
    Params = NuSlerpParams
    needs_base = False
    accepts_base = True
    min_inputs = 2
    max_inputs = 2

    def merge(self, base, inputs, params: NuSlerpParams, ctx: TensorContext):
        w = params.weights_at(ctx, 2)
        t = 0.5 if abs(sum(w)) < 1e-6 else w[1] / sum(w)
        dim = 0 if params.nuslerp_row_wise else -1
        if base is not None:
            return base + nuslerp(
                t,
                inputs[0] - base,
                inputs[1] - base,
                dim=dim,
                flatten=params.nuslerp_flatten,
            )
        return nuslerp(t, inputs[0], inputs[1], dim=dim, flatten=params.nuslerp_flatten)
