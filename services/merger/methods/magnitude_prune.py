"""Magnitude pruning of task vectors: keep the largest entries, drop the rest."""

from __future__ import annotations

from dataclasses import dataclass

from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    check_density,
    keep_top_magnitude,
    param,
    task_vectors,
)


@dataclass
class MagnitudePruneParams(MergeParams):
    density: float = param(help="fraction of each task vector kept, in (0, 1]")
    scale: float = param(1.0, help="lambda, the scaling of the summed task vectors")

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        check_density(self.density)


class MagnitudePrune(MergeMethod):
    name = "magnitude_prune"
    summary = "base + lambda * sum_i w_i * top_magnitude(theta_i - base, density)"
    Params = MagnitudePruneParams

    def merge(self, base, inputs, params: MagnitudePruneParams, ctx: TensorContext):
        weights = params.weight_list(len(inputs))
        pruned = [
            keep_top_magnitude(d, params.density) for d in task_vectors(base, inputs)
        ]
        return base + params.scale * sum(
            w * d for w, d in zip(weights, pruned, strict=True)
        )
