"""Mixed-adapter LoRA forward without PEFT's per-call machinery.

PEFT runs a mixed-adapter batch (`adapter_names=`) through forward hooks that
hand every LoRA layer the row names, and each layer checks its arguments
before it loops over the batch's adapters. On a CPU decode step that
machinery costs about as much as the LoRA products themselves.

Here the caller names each row's adapter once per forward (`rows(...)`, a
context manager) and calls the transformers model inside the PeftModel
directly; every PEFT LoRA Linear, patched by `install`, reads the names and
applies each adapter to its own rows with the same operations as PEFT's
mixed-batch forward (so the results are bit-identical to it, and to
generating with the adapter alone). Outside `rows(...)` the layers run
PEFT's own forward unchanged.

Only adapters PEFT would run as plain LoRA qualify (no DoRA or other variant,
no bias on lora_B, no modules_to_save); `plain_adapter` says which.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# The batch being run: (row adapter names, {name: row indices tensor}).
_ROWS: ContextVar[tuple[tuple[str, ...], dict[str, Any]] | None] = ContextVar(
    "lorafleet_lora_rows", default=None
)


@contextmanager
def rows(adapter_names: list[str]) -> Iterator[None]:
    """Runs the forward in the block with row i using adapter_names[i]."""
    import torch

    groups: dict[str, list[int]] = {}
    for i, name in enumerate(adapter_names):
        groups.setdefault(name, []).append(i)
    indices = {name: torch.tensor(idx) for name, idx in groups.items()}
    token = _ROWS.set((tuple(adapter_names), indices))
    try:
        yield
    finally:
        _ROWS.reset(token)


def _forward(self, x, *args, **kwargs):
    batch = _ROWS.get()
    if batch is None:
        return self._lorafleet_peft_forward(x, *args, **kwargs)
    import torch.nn.functional as F

    result = self.base_layer(x, *args, **kwargs)
    dtype = result.dtype
    groups = batch[1]
    whole = len(groups) == 1  # every row on one adapter: no gather, no scatter
    for name, index in groups.items():
        if name not in self.lora_A:
            continue  # "__base__", or an adapter that leaves this layer alone
        # What PEFT's _mixed_batch_forward does for a vanilla LoRA adapter,
        # with the products as F.linear (nn.Linear's own forward, bias-free)
        # rather than module calls, and dropout only while training: the
        # same operations on the same values, so the same bits.
        lora_a = self.lora_A[name].weight
        sub = x if whole else x[index]
        if sub.dtype != lora_a.dtype:  # (.to is a dispatch even when a no-op)
            sub = sub.to(lora_a.dtype)
        dropout = self.lora_dropout[name]
        if dropout.training:
            sub = dropout(sub)
        out = F.linear(F.linear(sub, lora_a), self.lora_B[name].weight)
        out = out * self.scaling[name]
        if out.dtype != dtype:
            out = out.to(dtype)
        if whole:
            result += out
        else:
            result.index_add_(0, index, out)
    return result


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
