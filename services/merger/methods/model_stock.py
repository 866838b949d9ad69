"""Model Stock (Jang et al. 2024): interpolate the inputs' average toward the
base by how much their task vectors agree (the mean pairwise cosine)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from services.merger.methods.base import MergeMethod, MergeParams, TensorContext, param


@dataclass
class ModelStockParams(MergeParams):
    filter_wise: bool = param(
        False, help="one ratio per output row instead of per tensor"
    )

    def check(self, n_inputs: int) -> None:
        super().check(n_inputs)


class ModelStock(MergeMethod):
    name = "model_stock"
    summary = "t * mean(theta_i) + (1 - t) * base, t from the task vectors' angle"
    Params = ModelStockParams
    min_inputs = 2

    def merge(self, base, inputs, params: ModelStockParams, ctx: TensorContext):
        shape = base.shape
        if params.filter_wise:
            w0 = base.unsqueeze(0) if base.dim() == 1 else base
            ws = [w.unsqueeze(0) if w.dim() == 1 else w for w in inputs]
        else:
            w0 = base.reshape(-1)
            ws = [w.reshape(-1) for w in inputs]
        offsets = [w - w0 for w in ws]
        cosines = []
        for i, a in enumerate(offsets):
            for b in offsets[i + 1 :]:
                norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
                cosines.append(
                    ((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1)
                )
        cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
        n = len(ws)
        denominator = 1 + (n - 1) * cos
        singular = denominator.abs() < 1e-6
        safe = torch.where(singular, torch.ones_like(denominator), denominator)
        t = torch.where(singular, torch.zeros_like(cos), (n * cos) / safe)
        average = sum(ws) / n
        return (t * average + (1 - t) * w0).reshape(shape)
