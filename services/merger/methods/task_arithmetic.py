"""Task arithmetic (Ilharco et al. 2023): base + lambda * sum of task vectors."""

from __future__ import annotations

from dataclasses import dataclass

from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    param,
    task_vectors,
)


@dataclass
class TaskArithmeticParams(MergeParams):
    scale: float = param(1.0, help="lambda, the scaling of the summed task vectors")


class TaskArithmetic(MergeMethod):
    name = "task_arithmetic"
    summary = "base + lambda * sum_i w_i * (theta_i - base)"
    Params = TaskArithmeticParams

    def merge(self, base, inputs, params: TaskArithmeticParams, ctx: TensorContext):
        weights = params.weight_list(len(inputs))
        deltas = task_vectors(base, inputs)
        return base + params.scale * sum(
            w * d for w, d in zip(weights, deltas, strict=True)
        )
