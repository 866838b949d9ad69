"""Merge methods as plug-ins: one class per file, listed in METHODS.

Adding a method is one new file with a `MergeMethod` subclass and one line here.
"""

from __future__ import annotations

from services.common.errors import InvalidArgument, shorten
from services.merger.methods.base import (
    MergeMethod,
    MergeParams,
    TensorContext,
    parse_params,
)
from services.merger.methods.karcher import Karcher
from services.merger.methods.linear import Linear
from services.merger.methods.magnitude_prune import MagnitudePrune
from services.merger.methods.model_stock import ModelStock
from services.merger.methods.multislerp import MultiSlerp
from services.merger.methods.nuslerp import NuSlerp
from services.merger.methods.passthrough import Passthrough
from services.merger.methods.sce import Sce
from services.merger.methods.slerp import Slerp
from services.merger.methods.task_vector import VARIANTS

METHODS: dict[str, type[MergeMethod]] = {
    cls.name: cls
    for cls in (
        Linear,
        *VARIANTS,
        Slerp,
        MagnitudePrune,
        ModelStock,
        Sce,
        Karcher,
        MultiSlerp,
        NuSlerp,
        Passthrough,
    )
}


def get(name: str) -> MergeMethod:
    """The method called `name`; unknown names list the valid ones."""
    try:
        return METHODS[name]()
    except KeyError:
        valid = ", ".join(sorted(METHODS))  # summaries: README, each class
        raise InvalidArgument(
            f"unknown merge method {shorten(name)!r}; valid methods: {valid}",
            field="method",
        ) from None


__all__ = [
    "METHODS",
    "MergeMethod",
    "MergeParams",
    "TensorContext",
    "get",
    "parse_params",
]
