"""SCE (Wan et al. 2024): select the entries whose task vectors vary most,
weight each task vector by its mean square, erase minority signs, average."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    check_unit,
    param,
)
from services.merger.settings import Setting, check_setting, numbers_in, value_at


@dataclass
class SceParams(MergeParams):
    select_topk: Setting = param(
        1.0,
        help="fraction of entries kept, those whose task vectors vary most (a "
        "number, a gradient over the layers or per-tensor filters)",
    )
    int8_mask: bool = param(False, help="hold the masks as int8 (saves memory)")

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)
        self.select_topk = check_setting(
            "select_topk", self.select_topk, help="in [0, 1]"
        )
        for value in numbers_in(self.select_topk):
            check_unit("select_topk", value)

    def topk(self, ctx: TensorContext) -> float:
        return value_at(self.select_topk, "select_topk", ctx.name, ctx.position)


def _selection(tvs: torch.Tensor, density: float, dtype) -> torch.Tensor:
    if density <= 0:
        return torch.zeros_like(tvs[0], dtype=dtype)
    if density >= 1:
        return torch.ones_like(tvs[0], dtype=dtype)
    var = torch.var(tvs, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * density)
    mask = torch.zeros_like(var, dtype=dtype)
    if k:
        mask.view(-1)[torch.topk(var.abs().view(-1), k=k, largest=True).indices] = 1
    return mask


class Sce(MergeMethod):
    name = "sce"
    summary = "select by variance, weight by mean square, elect sign, average"
    Params = SceParams

    def merge(self, base, inputs, params: SceParams, ctx: TensorContext):
        dtype = torch.int8 if params.int8_mask else base.dtype
        tvs = torch.stack([x - base for x in inputs])
        topk = params.topk(ctx)
        if topk < 1:
            tvs = tvs * _selection(tvs, topk, dtype).unsqueeze(0)
        total = tvs.sum(dim=0)
        majority = (total >= 0).to(dtype) * 2 - 1
        erase = (tvs.sign().to(dtype) == majority).to(base.dtype)
        weights = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)
        weight_sum = float(weights.sum())
        if abs(weight_sum) < 1e-6:
            weights = torch.ones_like(weights) / weights.shape[0]
        else:
            weights = weights / weight_sum
        while weights.dim() < tvs.dim():
            weights = weights.unsqueeze(-1)
        kept = weights * erase
        merged = (tvs * kept).sum(dim=0) / kept.sum(dim=0).clamp(min=1e-6)
        return base + merged
