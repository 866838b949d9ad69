"""DARE (Yu et al. 2024): drop task-vector entries at random, rescale the rest.

Two variants share the drop step: `dare_linear` sums the rescaled task vectors,
`dare_ties` combines them with TIES' sign election and disjoint mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    check_density,
    param,
    sign_consensus_mean,
    task_vectors,
)


@dataclass
class DareParams(MergeParams):
    density: float = param(help="keep probability of each entry, in (0, 1]")
    scale: float = param(1.0, help="lambda, the scaling of the merged task vector")
    seed: int = param(0, help="seed of the random drop (same seed, same merge)")

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        check_density(self.density)


def drop_and_rescale(
    delta: torch.Tensor, density: float, generator: torch.Generator
) -> torch.Tensor:
    """Keeps each entry with probability `density` and divides survivors by it."""
    if density >= 1.0:
        return delta.clone()
    keep = torch.rand(delta.shape, generator=generator) < density
    return torch.where(keep, delta / density, torch.zeros_like(delta))


def _dropped(base, inputs, params: DareParams, ctx: TensorContext):
    seeded = TensorContext(ctx.name, ctx.num_layers, params.seed)
    return [
        drop_and_rescale(d, params.density, seeded.generator(i))
        for i, d in enumerate(task_vectors(base, inputs))
    ]


class DareLinear(MergeMethod):
    name = "dare_linear"
    summary = "base + lambda * sum_i w_i * rescale(drop(tau_i, density))"
    Params = DareParams

    def merge(self, base, inputs, params: DareParams, ctx: TensorContext):
        weights = params.weight_list(len(inputs))
        deltas = _dropped(base, inputs, params, ctx)
        return base + params.scale * sum(
            w * d for w, d in zip(weights, deltas, strict=True)
        )


class DareTies(MergeMethod):
    name = "dare_ties"
    summary = "base + lambda * disjoint_mean(elect_sign(rescale(drop(tau_i))))"
    Params = DareParams

    def merge(self, base, inputs, params: DareParams, ctx: TensorContext):
        deltas = _dropped(base, inputs, params, ctx)
        weights = params.weight_list(len(inputs))
        return base + params.scale * sign_consensus_mean(deltas, weights)
