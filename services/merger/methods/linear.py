"""Weighted linear average of models (a "model soup")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.common.errors import InvalidArgument
from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    param,
    shown,
)


@dataclass
class LinearParams(MergeParams):
    normalize: bool = param(True, help="divide by the sum of the weights")

    def check(self, n_inputs: int) -> None:
        """Weights that make every merged tensor zero or undefined are refused.

        All-zero weights give an all-zero model; with normalize, weights that
        sum to 0 (e.g. [1, -1]) leave nothing to divide by.
        """
        super().check(n_inputs)
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
        weights = params.weight_list(len(inputs))
        merged = sum(w * x for w, x in zip(weights, inputs, strict=True))
        if params.normalize:
            merged = merged / sum(weights)  # non-zero: LinearParams.check
        return torch.as_tensor(merged)
