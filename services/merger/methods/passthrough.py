"""Passthrough: one model's tensor as it is (optionally scaled).

On its own it copies a model; with a recipe's `slices` it is mergekit's layer
stacking ("frankenmerges", depth up-scaling): each output slice takes a range
of layers from one model, and the output has as many layers as the slices
together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.common.errors import InvalidArgument
from services.merger.methods.base import MergeMethod, MergeParams, TensorContext, param
from services.merger.settings import Setting, check_setting, evaluate


@dataclass
class PassthroughParams(MergeParams):
    scale: Setting | None = param(
        None,
        help="multiply the tensor by this (a number, a gradient over the layers "
        "or per-tensor filters); unset copies it unchanged",
    )

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        if self.weights:
            raise InvalidArgument(
                "passthrough copies one model; it takes scale, not weights",
                field="params.weights",
            )
        if self.scale is not None:
            self.scale = check_setting("scale", self.scale, help="a multiplier")


class Passthrough(MergeMethod):
    name = "passthrough"
    summary = "one model's tensors as they are (with slices: layer stacking)"
    Params = PassthroughParams
    needs_base = False
    min_inputs = 1
    max_inputs = 1

    def merge(self, base, inputs, params: PassthroughParams, ctx: TensorContext):
        if params.scale is None:
            return inputs[0]
        scale = evaluate(params.scale, ctx.name, ctx.position)
        if scale is None:
            # mergekit leaves a tensor no filter matches unscaled.
            return inputs[0]
        return inputs[0] * torch.tensor(scale, dtype=inputs[0].dtype)
