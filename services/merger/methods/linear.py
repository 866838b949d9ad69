"""Weighted linear average of models (a "model soup")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.merger.methods.base import MergeMethod, MergeParams, TensorContext, param


@dataclass
class LinearParams(MergeParams):
    normalize: bool = param(True, help="divide by the sum of the weights")


class Linear(MergeMethod):
    name = "linear"
    summary = "sum_i w_i * theta_i (divided by sum_i w_i when normalize)"
    Params = LinearParams
    needs_base = False
    min_inputs = 2

    def merge(self, base, inputs, params: LinearParams, ctx: TensorContext):
        weights = params.weight_list(len(inputs))
        merged = sum(w * x for w, x in zip(weights, inputs, strict=True))
        total = sum(weights)
        if params.normalize and total != 0:
            merged = merged / total
        return torch.as_tensor(merged)
