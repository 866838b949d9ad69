"""The task-vector family as mergekit defines it: one class, named variants.

Every variant computes, per tensor, the task vectors tau_i = theta_i - base,
optionally sparsifies each (`sparsification`), weights them by w_i, optionally
keeps only the entries agreeing with the elected sign (`consensus`), sums,
optionally divides by the summed weights of what was kept (`normalize`),
scales by lambda and adds the base:

    task_arithmetic   no sparsification, no consensus          (normalize off)
    ties              magnitude trim, sign consensus           (normalize on)
    dare_linear       random drop, no consensus                (rescale on)
    dare_ties         random drop, sign consensus              (rescale on)
    breadcrumbs       drop the smallest and the largest (gamma)
    breadcrumbs_ties  ... with sign consensus
    della             rank-weighted random drop, consensus   (normalize, rescale on)
    della_linear      ... without consensus                   (rescale on)

The defaults are mergekit 0.1.5's, so a recipe gives its numbers: the trim
keeps int(density * n) entries (at least one), an entry whose weighted sum is
exactly 0 elects +, and `rescale` restores each sparsified task vector's L1
norm. The paper-style variants are explicit parameters: `trim: round`,
`zero_sign: drop`, `rescale_norm: density` (divide survivors by the keep
probability). Every numeric parameter takes a number, a gradient over the
layers or per-tensor filters (services/merger/settings.py); `weights`,
`densities`, `gammas` and `epsilons` hold one setting per input model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from services.common.errors import InvalidArgument
from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    param,
    shown,
)
from services.merger.settings import (
    Setting,
    check_setting,
    numbers_in,
    value_at,
)

RESCALE_NORMS = ("l1", "l2", "linf", "density")
_PLURAL = {
    "weight": "weights",
    "density": "densities",
    "gamma": "gammas",
    "epsilon": "epsilons",
}
_EPS = 1e-7


@dataclass(kw_only=True)
class TaskVectorParams(MergeParams):
    weights: list[Setting] = param(
        [], help="one weight setting per input (default 1.0)"
    )
    density: Setting = param(1.0, help="fraction of each task vector kept, in (0, 1]")
    densities: list[Setting] = param(
        [], help="one density setting per input (overrides density)"
    )
    scale: Setting = param(1.0, help="lambda, the scaling of the merged task vector")
    normalize: bool | None = param(
        None, help="divide by the summed weights of the kept entries"
    )
    rescale: bool | None = param(
        None, help="rescale each sparsified task vector (see rescale_norm)"
    )
    rescale_norm: str = param(
        "l1", help="l1, l2 or linf (restore that norm) or density (divide by it)"
    )
    int8_mask: bool = param(False, help="hold the sign mask as int8 (saves memory)")
    gamma: Setting = param(
        0.01, help="breadcrumbs: fraction of largest entries dropped"
    )
    gammas: list[Setting] = param([], help="one gamma setting per input")
    epsilon: Setting = param(0.15, help="della: spread of keep probabilities by rank")
    epsilons: list[Setting] = param([], help="one epsilon setting per input")
    seed: int = param(0, help="seed of random drops (same seed, same merge)")
    trim: str = param("floor", help="floor (mergekit) or round: entries kept")
    zero_sign: str = param(
        "positive", help="positive (mergekit) or drop: entries whose sum is 0"
    )

    def check(self, n_inputs: int) -> None:
        for name in ("weights", "densities", "gammas", "epsilons"):
            values = getattr(self, name)
            if values and len(values) != n_inputs:
                raise InvalidArgument(
                    f"{name} has {len(values)} values but there are {n_inputs} input "
                    f"models; give one per input or none",
                    field=f"params.{name}",
                )
            setattr(
                self,
                name,
                [
                    check_setting(f"{name}[{i}]", v, help=_help(self, name))
                    for i, v in enumerate(values)
                ],
            )
        for name in ("density", "scale", "gamma", "epsilon"):
            setattr(
                self,
                name,
                check_setting(name, getattr(self, name), help=_help(self, name)),
            )
        for name, low, high, shown_range in (
            ("density", 0.0, 1.0, "(0, 1]"),
            ("gamma", -1e-12, 1.0, "[0, 1)"),
            ("epsilon", -1e-12, 0.5, "[0, 0.5)"),
        ):
            settings = [getattr(self, name), *getattr(self, _PLURAL[name])]
            for value in (v for s in settings for v in numbers_in(s)):
                inside = (
                    low < value <= high if name == "density" else low < value < high
                )
                if not inside:
                    raise InvalidArgument(
                        f"{name} must be in {shown_range}, got {shown(value)}",
                        field=f"params.{name}",
                    )
        if self.rescale_norm not in RESCALE_NORMS:
            raise InvalidArgument(
                f"rescale_norm must be one of {', '.join(RESCALE_NORMS)}, got "
                f"{shown(self.rescale_norm)}",
                field="params.rescale_norm",
            )
        if self.trim not in ("floor", "round"):
            raise InvalidArgument(
                f"trim must be floor or round, got {shown(self.trim)}",
                field="params.trim",
            )
        if self.zero_sign not in ("positive", "drop"):
            raise InvalidArgument(
                f"zero_sign must be positive or drop, got {shown(self.zero_sign)}",
                field="params.zero_sign",
            )

    def per_input(self, name: str, i: int, ctx: TensorContext) -> float:
        values = getattr(self, _PLURAL[name])
        setting = values[i] if values else getattr(self, name, 1.0)
        return value_at(setting, f"{_PLURAL[name]}[{i}]", ctx.name, ctx.position)

    def shared(self, name: str, ctx: TensorContext) -> float:
        return value_at(getattr(self, name), name, ctx.name, ctx.position)


def _help(params: TaskVectorParams, name: str) -> str:
    field = next(f for f in dataclasses.fields(params) if f.name == name)
    return field.metadata.get("help", "")


def rescaled(
    tensor: torch.Tensor, mask: torch.Tensor, norm: str | None, density: float
):
    """`tensor * mask`, rescaled to `tensor`'s norm (or by 1/density)."""
    masked = tensor * mask
    if norm is None:
        return masked
    if norm == "density":
        return masked / density
    if norm == "l1":
        before, after = tensor.abs().sum(), masked.abs().sum()
    elif norm == "l2":
        before, after = tensor.norm(), masked.norm()
    else:
        before, after = tensor.abs().max(), masked.abs().max()
    if before < _EPS or after < _EPS:
        return masked
    return masked * (before / after)


def magnitude(tau, density, norm, *, trim="floor", **_):
    if density >= 1:
        return tau
    if density <= 0 or tau.numel() == 0:
        return torch.zeros_like(tau)
    n = tau.numel()
    k = max(1, int(density * n) if trim == "floor" else int(round(density * n)))
    mask = torch.zeros(n, dtype=tau.dtype)
    mask[torch.argsort(tau.abs().reshape(-1), descending=True)[:k]] = 1
    return rescaled(tau, mask.reshape_as(tau), norm, density)


def random(tau, density, norm, *, generator, **_):
    if density >= 1:
        return tau
    probs = torch.full_like(tau, density)
    mask = torch.bernoulli(probs, generator=generator)
    return rescaled(tau, mask, norm, density)


def magnitude_outliers(tau, density, norm, *, gamma, **_):
    if density >= 1:
        return tau
    n = tau.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    order = torch.sort(tau.abs().reshape(-1), descending=False).indices
    mask = torch.zeros(n, dtype=tau.dtype)
    mask[order[n_bot : n_bot + target]] = 1
    return rescaled(tau, mask.reshape_as(tau), norm, density)


def della_magprune(tau, density, norm, *, epsilon, generator, **_):
    if density >= 1:
        return tau
    if density <= 0:
        return torch.zeros_like(tau)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise InvalidArgument(
            f"della needs density ± epsilon inside (0, 1); got density {density} "
            f"and epsilon {epsilon}",
            field="params.epsilon",
        )
    shape = tau.shape
    work = tau.unsqueeze(0) if tau.dim() < 2 else tau
    ranks = torch.argsort(torch.argsort(work.abs(), dim=1), dim=1).to(work.dtype) + 1
    low = ranks.min(dim=1, keepdim=True).values
    high = ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - low) / (high - low)).clamp(0, 1)
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    mask = torch.bernoulli(probs, generator=generator)
    return rescaled(work, mask, norm, density).reshape(shape)


SPARSIFIERS = {
    "magnitude": magnitude,
    "random": random,
    "magnitude_outliers": magnitude_outliers,
    "della_magprune": della_magprune,
}


class TaskVectorMethod(MergeMethod):
    """One configured variant of the family (see the module docstring)."""

    Params = TaskVectorParams
    sparsification: ClassVar[str | None] = None
    consensus: ClassVar[bool] = False
    default_normalize: ClassVar[bool] = False
    default_rescale: ClassVar[bool] = False

    def merge(self, base, inputs, params: TaskVectorParams, ctx: TensorContext):
        normalize = (
            self.default_normalize if params.normalize is None else params.normalize
        )
        rescale = self.default_rescale if params.rescale is None else params.rescale
        norm = params.rescale_norm if rescale else None
        seeded = TensorContext(ctx.name, ctx.num_layers, params.seed, ctx.t)
        deltas, weights = [], []
        for i, x in enumerate(inputs):
            tau = x - base
            if self.sparsification:
                tau = SPARSIFIERS[self.sparsification](
                    tau,
                    params.per_input("density", i, ctx),
                    norm,
                    trim=params.trim,
                    gamma=params.per_input("gamma", i, ctx),
                    epsilon=params.per_input("epsilon", i, ctx),
                    generator=seeded.generator(i),
                )
            deltas.append(tau)
            weights.append(params.per_input("weight", i, ctx))
        if not deltas:
            return base
        stacked = torch.stack(deltas)
        w = torch.tensor(weights, dtype=stacked.dtype).view(-1, *[1] * base.dim())
        stacked = stacked * w
        if self.consensus:
            mask = _sign_mask(stacked, params.zero_sign, params.int8_mask, base.dtype)
            mixed = (stacked * mask).sum(dim=0)
            divisor = (w * mask).sum(dim=0)
            divisor[divisor == 0] = 1
        else:
            mixed = stacked.sum(dim=0)
            divisor = w.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        if normalize:
            mixed = mixed / divisor
        scale = params.shared("scale", ctx)
        if scale != 1:
            mixed = mixed * scale
        return base + mixed


def _sign_mask(stacked, zero_sign: str, int8: bool, dtype) -> torch.Tensor:
    """Entries agreeing with the elected sign (the sign of the weighted sum)."""
    mask_dtype = torch.int8 if int8 else dtype
    sign = stacked.sign().to(mask_dtype)
    total = stacked.sum(dim=0)
    if zero_sign == "positive":
        elected = (total >= 0).to(mask_dtype) * 2 - 1
    else:
        elected = total.sign().to(mask_dtype)
    mask = (sign == elected) & (sign != 0)
    return mask.to(dtype)


def _variant(
    name: str,
    summary: str,
    sparsification: str | None,
    consensus: bool,
    normalize: bool,
    rescale: bool,
) -> type[TaskVectorMethod]:
    attrs: dict[str, Any] = {
        "name": name,
        "summary": summary,
        "sparsification": sparsification,
        "consensus": consensus,
        "default_normalize": normalize,
        "default_rescale": rescale,
        "__doc__": f"{name}: {summary}",
    }
    return type(name.title().replace("_", ""), (TaskVectorMethod,), attrs)


VARIANTS = [
    _variant(
        "task_arithmetic", "base + lambda * sum_i w_i tau_i", None, False, False, False
    ),
    _variant(
        "ties",
        "trim by magnitude, elect sign, disjoint mean",
        "magnitude",
        True,
        True,
        False,
    ),
    _variant(
        "dare_linear",
        "random drop, rescale, weighted sum",
        "random",
        False,
        False,
        True,
    ),
    _variant(
        "dare_ties",
        "random drop, rescale, elect sign, sum",
        "random",
        True,
        False,
        True,
    ),
    _variant(
        "breadcrumbs",
        "drop smallest and largest (gamma), weighted sum",
        "magnitude_outliers",
        False,
        False,
        False,
    ),
    _variant(
        "breadcrumbs_ties",
        "drop smallest and largest (gamma), elect sign",
        "magnitude_outliers",
        True,
        False,
        False,
    ),
    _variant(
        "della",
        "rank-weighted random drop (epsilon), elect sign, mean",
        "della_magprune",
        True,
        True,
        True,
    ),
    _variant(
        "della_linear",
        "rank-weighted random drop (epsilon), weighted sum",
        "della_magprune",
        False,
        False,
        True,
    ),
]
