"""Weighted linear average of models (a "model soup")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    param,
    shown,
)
from services.merger.settings import Setting, check_setting, evaluate, position


@dataclass
class LinearParams(MergeParams):
    weights: list[Setting] = param(
        [],
        help="one weight per input model (default 1.0 each); each a number, a "
        "gradient over the layers or per-tensor filters",
    )
    normalize: bool = param(True, help="divide by the sum of the weights")

    def check(self, n_inputs: int) -> None:
        """Weights that make every merged tensor zero or undefined are refused.

        All-zero weights give an all-zero model; with normalize, weights that
        sum to 0 (e.g. [1, -1]) leave nothing to divide by.
        """
        if self.weights and len(self.weights) != n_inputs:
            raise InvalidArgument(
                f"weights has {len(self.weights)} values but there are {n_inputs} "
                "input models; give one weight per input or none",
                field="params.weights",
            )
        self.weights = [
            check_setting(f"weights[{i}]", w, help="one weight per input model")
            for i, w in enumerate(self.weights)
        ]
        if not all(isinstance(w, float) for w in self.weights):
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
        weights = [
            evaluate(w, ctx.name, position(ctx.layer, ctx.num_layers))
            for w in params.weight_list(len(inputs))
        ]
        if any(w is None for w in weights):
            raise InvalidArgument(
                f"a weight has no filter matching tensor {ctx.name}; end each "
                "filter list with an entry without a filter (the default)",
                field="params.weights",
            )
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
