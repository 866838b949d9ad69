"""Karcher mean: the weighted Riemannian mean of the tensors' directions on the
unit sphere (fixed-point iteration), scaled by their weighted mean norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.common.errors import InvalidArgument
from services.merger.methods.base import MergeMethod, MergeParams, TensorContext, param


@dataclass
class KarcherParams(MergeParams):
    max_iter: int = param(10, help="fixed-point iterations at most")
    tol: float = param(1e-5, help="stop when the tangent step is this small")

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        if self.weights:
            raise InvalidArgument(
                "karcher weighs its inputs equally (mergekit's); leave weights out",
                field="params.weights",
            )
        if self.max_iter < 1 or not 0 < self.tol < 1:
            raise InvalidArgument(
                f"max_iter must be >= 1 and tol in (0, 1), got {self.max_iter} and "
                f"{self.tol}",
                field="params.max_iter",
            )


def karcher_mean(tensors, alphas, max_iter: int, tol: float) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(t) for t in tensors]
    units = [
        torch.zeros_like(t) if float(n) == 0.0 else t / n
        for t, n in zip(tensors, norms, strict=True)
    ]
    valid = [i for i, n in enumerate(norms) if float(n) > tol]
    if not valid:
        return sum(t * 0 for t in tensors)
    alpha_sum = sum(alphas[i] for i in valid)
    weights = [alphas[i] / alpha_sum for i in valid]
    valid_units = [units[i] for i in valid]
    mean = torch.zeros_like(valid_units[0])
    for a, u in zip(weights, valid_units, strict=True):
        mean += a * u
    mean_norm = torch.linalg.vector_norm(mean)
    mean = valid_units[0].clone() if float(mean_norm) < tol else mean / mean_norm
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for a, u in zip(weights, valid_units, strict=True):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += a * (theta / torch.sin(theta)) * (u - dot * mean)
        step = torch.linalg.vector_norm(tangent)
        if float(step) < tol:
            break
        mean = torch.cos(step) * mean + torch.sin(step) * (tangent / step)
        unit_norm = torch.linalg.vector_norm(mean)
        if float(unit_norm) > tol:
            mean = mean / unit_norm
    return sum(a * n for a, n in zip(alphas, norms, strict=True)) * mean


class Karcher(MergeMethod):
    name = "karcher"
    summary = "Riemannian (Karcher) mean of the inputs on the sphere"
    Params = KarcherParams
    needs_base = False
    min_inputs = 2

    def merge(self, base, inputs, params: KarcherParams, ctx: TensorContext):
        alphas = [1.0 / len(inputs)] * len(inputs)
        return karcher_mean(inputs, alphas, params.max_iter, params.tol)
