"""Mixed-adapter LoRA forward without PEFT's per-call machinery.

PEFT runs a mixed-adapter batch (`adapter_names=`) through forward hooks that
hand every LoRA layer the row names, and each layer checks its arguments
before it loops over the batch's adapters. On a CPU decode step that
machinery costs about as much as the LoRA products themselves.

Here the caller names each row's adapter once per forward (`rows(...)`, a
context manager) and calls the transformers model inside the PeftModel
directly; every PEFT LoRA Linear, patched by `install`, reads the names.
A layer whose rows use one adapter (and base rows) applies it with the same
operations as PEFT's mixed-batch forward, so the results are bit-identical
to it and to generating with the adapter alone (`_grouped`); a layer mixing
several adapters applies them all in two stacked products (`_stacked`),
equal to PEFT's up to the last bits of the sums. Outside `rows(...)` the
layers run PEFT's own forward unchanged.

Only adapters PEFT would run as plain LoRA qualify (no DoRA or other variant,
no bias on lora_B, no modules_to_save); `plain_adapter` says which.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

# Stacked weights kept per LoRA layer: one entry per set of adapters seen
# together lately (a batch's set changes only as rows join and leave).
MAX_STACKS = 2
# Batches mixing at least this many adapters in a layer take the stacked path.
STACK_MIN_ADAPTERS = 2


@dataclass
class _Batch:
    """The rows of one forward: each row's adapter, rows grouped by adapter,
    and the row masks of the stacked path, built once per forward for each
    layout of stacked adapters (most layers share one)."""

    names: tuple[str, ...]
    groups: dict[str, Any]  # adapter -> row indices tensor
    masks: dict[tuple, tuple[Any, Any]] = field(default_factory=dict)

    def mask(
        self, layout: tuple[tuple[str, int, float], ...], like: Any
    ) -> tuple[Any, Any]:
        """(0/1 mask [rows, 1, sum of ranks] keeping each row's own adapter's
        columns, per-row scale [rows, 1, 1]) for adapters (name, rank, scale)
        stacked in `layout` order; rows of other adapters get zeros. In the
        dtype and on the device of `like` (the stacked weights)."""
        key = (layout, like.dtype, like.device)
        hit = self.masks.get(key)
        if hit is None:
            import torch

            columns, scales = {}, {}
            offset = 0
            for name, rank, scale in layout:
                columns[name] = (offset, offset + rank)
                scales[name] = scale
                offset += rank
            rows = len(self.names)
            mask = torch.zeros(rows, 1, offset, dtype=like.dtype, device=like.device)
            scale = torch.zeros(rows, 1, 1, dtype=like.dtype, device=like.device)
            for row, name in enumerate(self.names):
                if name in columns:
                    start, end = columns[name]
                    mask[row, 0, start:end] = 1.0
                    scale[row, 0, 0] = scales[name]
            hit = self.masks[key] = (mask, scale)
        return hit


_ROWS: ContextVar[_Batch | None] = ContextVar("lorafleet_lora_rows", default=None)


@contextmanager
def rows(adapter_names: list[str]) -> Iterator[None]:
    """Runs the forward in the block with row i using adapter_names[i]."""
    import torch

    groups: dict[str, list[int]] = {}
    for i, name in enumerate(adapter_names):
        groups.setdefault(name, []).append(i)
    indices = {name: torch.tensor(idx) for name, idx in groups.items()}
    token = _ROWS.set(_Batch(tuple(adapter_names), indices))
    try:
        yield
    finally:
        _ROWS.reset(token)


def _forward(self, x, *args, **kwargs):
    batch = _ROWS.get()
    if batch is None:
        return self._lorafleet_peft_forward(x, *args, **kwargs)
    result = self.base_layer(x, *args, **kwargs)
    # Adapters with weights here (not "__base__", nor ones that leave this
    # layer alone), sorted: a set of adapters has one stack, whatever the
    # rows' order.
    present = sorted(name for name in batch.groups if name in self.lora_A)
    if len(present) >= STACK_MIN_ADAPTERS and not self.training:
        out = _stacked(self, batch, present, x)
        result += out if out.dtype == result.dtype else out.to(result.dtype)
    elif present:
        _grouped(self, batch, present, x, result)
    return result


def _stacked(self, batch: _Batch, present: list[str], x):
    """Every adapter of the batch at once: x @ [A1; A2; ...]^T, each row
    masked to its own adapter's columns, @ [B1 B2 ...]^T, times each row's
    scale: two products per layer however many adapters, where one per
    adapter cost four times the small operations (a SmolLM2 decode step of
    8 rows over 4 adapters: 97.8 -> 91.0 ms). PEFT's order is kept (A, then
    B, then the scale) and the other adapters' columns add exact zeros, but
    the BLAS may sum a wider product in another order: with SmolLM2's
    rank-16 adapters the logits were bit-identical to PEFT's, with the tiny
    test model's ranks 8 and 4 they differ in the last bits (< 2e-6), and
    greedy tokens were identical in both (tests and serve_bench check it)."""
    import torch
    import torch.nn.functional as F

    weights = tuple((self.lora_A[n].weight, self.lora_B[n].weight) for n in present)
    stacks = self.__dict__.setdefault("_lorafleet_stacks", {})
    key = tuple(present)
    hit = stacks.get(key)
    # Held tensors, compared by identity: an adapter reloaded under its
    # name (new tensors) is stacked again, never served stale.
    if hit is None or any(
        a is not ha or b is not hb
        for (a, b), (ha, hb) in zip(weights, hit[0], strict=True)
    ):
        if len(stacks) >= MAX_STACKS:
            stacks.pop(next(iter(stacks)))
        a_cat = torch.cat([a for a, _ in weights])
        b_cat = torch.cat([b for _, b in weights], dim=1)
        hit = stacks[key] = (weights, a_cat, b_cat)
    _, a_cat, b_cat = hit
    layout = tuple(
        (n, a.shape[0], self.scaling[n])
        for n, (a, _) in zip(present, weights, strict=True)
    )
    mask, scale = batch.mask(layout, a_cat)
    if x.dim() == 2:  # (rows, features): no sequence axis
        mask, scale = mask[:, 0], scale[:, 0]
    x = x if x.dtype == a_cat.dtype else x.to(a_cat.dtype)
    return F.linear(F.linear(x, a_cat) * mask, b_cat) * scale


def _grouped(self, batch: _Batch, present: list[str], x, result) -> None:
    """Adds each adapter's output to its own rows of `result`, with exactly
    PEFT's mixed-batch operations (the products as F.linear, nn.Linear's own
    bias-free forward; dropout only while training): the same bits."""
    import torch.nn.functional as F

    whole = len(batch.groups) == 1  # one adapter, every row: no gather/scatter
    for name in present:
        index = batch.groups[name]
        lora_a = self.lora_A[name].weight
        sub = x if whole else x[index]
        if sub.dtype != lora_a.dtype:  # (.to is a dispatch even when a no-op)
            sub = sub.to(lora_a.dtype)
        dropout = self.lora_dropout[name]
        if dropout.training:
            sub = dropout(sub)
        out = F.linear(F.linear(sub, lora_a), self.lora_B[name].weight)
        out = out * self.scaling[name]
        if out.dtype != result.dtype:
            out = out.to(result.dtype)
        if whole:
            result += out
        else:
            result.index_add_(0, index, out)


def install(model: Any) -> int:
    """Patches every PEFT LoRA Linear in `model`; returns how many (idempotent)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if isinstance(module, LoraLinear) and "_lorafleet_peft_forward" not in (
            module.__dict__
        ):
            module._lorafleet_peft_forward = module.forward
            module.forward = types.MethodType(_forward, module)
            count += 1
    return count


def inner_model(model: Any) -> Any:
    """The transformers model inside a PeftModel (LoRA layers in place)."""
    return model.base_model.model


def plain_adapter(config: Any) -> bool:
    """Whether an adapter (its PEFT config) runs as plain LoRA in every layer."""
    if getattr(config, "peft_type", None) is not None:
        if str(getattr(config.peft_type, "value", config.peft_type)) != "LORA":
            return False
    return not (
        getattr(config, "use_dora", False)
        or getattr(config, "modules_to_save", None)
        or getattr(config, "lora_bias", False)
        or getattr(config, "alora_invocation_tokens", None)
    )
