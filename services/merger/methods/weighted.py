"""Per-input weights that may vary over the model: shared by every method
that weighs its inputs (linear, multislerp, nuslerp), so a gradient or a
per-tensor filter means the same thing in each."""

from __future__ import annotations

from dataclasses import dataclass

from services.merger.methods.base import MergeParams, TensorContext, param
from services.merger.settings import Setting, check_setting, value_at


@dataclass
class GradedWeightsParams(MergeParams):
    weights: list[Setting] = param(
        [],
        help="one weight per input model (default 1.0 each); each a number, a "
        "gradient over the layers or per-tensor filters",
    )

    def check(self, n_inputs: int) -> None:
        self.check_weight_count(n_inputs)
        self.weights = [
            check_setting(f"weights[{i}]", w, help="one weight per input model")
            for i, w in enumerate(self.weights)
        ]

    @property
    def constant(self) -> bool:
        """True when every weight is one number for the whole model."""
        return all(isinstance(w, float) for w in self.weights)

    def weights_at(self, ctx: TensorContext, n_inputs: int) -> list[float]:
        """The weights of one tensor; a filter list that matches nothing is
        refused (mergekit would silently drop that input from the tensor)."""
        return [
            value_at(w, f"weights[{i}]", ctx.name, ctx.position)
            for i, w in enumerate(self.weight_list(n_inputs))
        ]
