"""Multi-SLERP: barycentric interpolation of any number of models on the
hypersphere (project to the tangent space at the weighted mean direction,
average there, map back), optionally around a base model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.common.errors import FailedPrecondition
from services.merger.methods.base import MergeMethod, TensorContext, param
from services.merger.methods.weighted import GradedWeightsParams


@dataclass
class MultiSlerpParams(GradedWeightsParams):
    normalize_weights: bool = param(True, help="scale the weights to sum to 1")
    eps: float = param(1e-8, help="numerical floor of the norms")


class MultiSlerp(MergeMethod):
    name = "multislerp"
    summary = "weighted spherical (barycentric) mean of the inputs, base optional"
    Params = MultiSlerpParams
    needs_base = False
    accepts_base = True
    min_inputs = 2

    def merge(self, base, inputs, params: MultiSlerpParams, ctx: TensorContext):
        stacked = torch.stack(inputs)
        if base is not None:
            stacked = stacked - base
        flat = stacked.view(stacked.shape[0], -1)
        weights = torch.tensor(params.weights_at(ctx, len(inputs)), dtype=stacked.dtype)
        if params.normalize_weights:
            weights = weights / weights.sum()
        eps = params.eps
        norms = torch.norm(flat, dim=-1, keepdim=True)
        units = flat / (norms + eps)
        mean = (units * weights.view(-1, 1)).sum(0)
        mean_norm = torch.norm(mean)
        if mean_norm < eps:
            if stacked.shape[0] != 2:
                raise FailedPrecondition(
                    f"multislerp: the weighted directions of tensor {ctx.name} "
                    "cancel out (antipodal inputs with balancing weights); use "
                    "other weights"
                )
            result = (stacked[0] * weights[0] + stacked[1] * weights[1]).view(
                stacked.shape[1:]
            )
        else:
            mean = mean / mean_norm
            dots = (units * mean).sum(-1, keepdim=True)
            tangent = ((units - dots * mean) * weights.view(-1, 1)).sum(0)
            tangent_norm = torch.norm(tangent) + eps
            result = mean * torch.cos(tangent_norm) + tangent * (
                torch.sin(tangent_norm) / tangent_norm
            )
            result = (result * (norms.squeeze(-1) * weights).sum()).view(
                stacked.shape[1:]
            )
        return result + base if base is not None else result
