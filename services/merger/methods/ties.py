"""TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint mean."""

from __future__ import annotations

from dataclasses import dataclass

from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    check_density,
    keep_top_magnitude,
    param,
    sign_consensus_mean,
    task_vectors,
)


@dataclass
class TiesParams(MergeParams):
    density: float = param(help="fraction of each task vector kept, in (0, 1]")
    scale: float = param(1.0, help="lambda, the scaling of the merged task vector")

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        check_density(self.density)


class Ties(MergeMethod):
    name = "ties"
    summary = "base + lambda * disjoint_mean(elect_sign(trim(tau_i, density)))"
    Params = TiesParams

    def merge(self, base, inputs, params: TiesParams, ctx: TensorContext):
        trimmed = [
            keep_top_magnitude(t, params.density) for t in task_vectors(base, inputs)
        ]
        weights = params.weight_list(len(inputs))
        return base + params.scale * sign_consensus_mean(trimmed, weights)
