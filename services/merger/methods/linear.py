"""Weighted linear average of models (a "model soup")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.methods.base import (
    MergeMethod,
    TensorContext,
    param,
    shown,
)
from services.merger.methods.weighted import GradedWeightsParams


@dataclass
class LinearParams(GradedWeightsParams):
    normalize: bool = param(True, help="divide by the sum of the weights")

    def check(self, n_inputs: int) -> None:
        """Weights that make every merged tensor zero or undefined are refused.

        All-zero weights give an all-zero model; with normalize, weights that
        sum to 0 (e.g. [1, -1]) leave nothing to divide by.
        """
        super().check(n_inputs)
        if not self.constant:
            return  # varies over the model: checked tensor by tensor in merge()
        if self.weights and not any(self.weights):
            raise InvalidArgument(
                f"parameter weights {shown(self.weights)} are all 0, which "
                "gives an all-zero model; give at least one non-zero weight "
                "(one per input model)",
                field="params.weights",
            )
        if self.normalize and self.weights and sum(self.weights) == 0:
            raise InvalidArgument(
                f"parameter weights {shown(self.weights)} sum to 0, so normalize "
                "cannot divide by their sum; use weights with a non-zero sum or "
                "set normalize to false",
                field="params.weights",
            )


class Linear(MergeMethod):
    name = "linear"
    summary = "sum_i w_i * theta_i (divided by sum_i w_i when normalize)"
    Params = LinearParams
    needs_base = False
    min_inputs = 2

    def merge(self, base, inputs, params: LinearParams, ctx: TensorContext):
        weights = params.weights_at(ctx, len(inputs))
        merged = sum(w * x for w, x in zip(weights, inputs, strict=True))
        if params.normalize:
            total = sum(weights)
            if total == 0:
                raise FailedPrecondition(
                    f"the weights sum to 0 at tensor {ctx.name}, so normalize cannot "
                    "divide by them; change the gradients or set normalize to false",
                    field="params.weights",
                )
            merged = merged / total
        return torch.as_tensor(merged)
