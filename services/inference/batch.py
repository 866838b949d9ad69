"""One decode batch: rows of different lengths and adapters sharing a forward.

Each request is prefilled alone (its own adapter, its own KV cache), then
joins the batch. The batch keeps one KV cache for all rows, left-padded to a
common length: a row's padding is masked out of attention and its positions
count from its own first token, so every row computes what it would alone
(greedy output is token-identical; tests/inference/test_batch.py checks it
with mixed adapters and lengths). Rows join and leave between steps; only a
join or a leave copies the cache, a decode step appends to it.

No scheduling here (who runs when): that is scheduler.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.inference import lora_rows
from services.inference.prefix_cache import PrefixCache

# PEFT's name for "no adapter" in a mixed-adapter forward (adapter_names=).
BASE_ADAPTER = "__base__"


@dataclass
class Prefilled:
    """A request's prompt run through the model: its cache and next logits."""

    cache: Any  # transformers DynamicCache, batch 1
    logits: Any  # [vocab] float tensor: the distribution of its first new token
    length: int  # tokens in its cache (prompt length)


def forward_kwargs(model: Any, adapters: list[str]) -> dict[str, Any]:
    """`adapter_names` only where the model is a PEFT model with adapters
    (a plain or merged model has no such argument)."""
    if getattr(model, "peft_config", None):
        return {"adapter_names": adapters}
    return {}


def prefill(
    model: Any,
    input_ids: list[int],
    adapter: str,
    solo: bool = False,
    prefixes: PrefixCache | None = None,
) -> Prefilled:
    """Runs one prompt with its adapter, from the longest kept prefix of it
    when `prefixes` has one; the caller holds torch.inference_mode and the
    model's lock. `solo`: see run_forward."""
    import torch
    from transformers import DynamicCache

    start, kept = (
        (0, None) if prefixes is None else prefixes.longest(adapter, input_ids)
    )
    cache = DynamicCache(kept) if kept else DynamicCache()
    out = run_forward(
        model,
        [adapter],
        solo,
        input_ids=torch.tensor([input_ids[start:]], device=device_of(model)),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    if prefixes is not None:
        prefixes.stats.tokens_prefilled += len(input_ids) - start
        prefixes.keep(adapter, input_ids, _layers_of(cache))
    return Prefilled(cache=cache, logits=out.logits[0, -1], length=len(input_ids))


class DecodeBatch:
    """The rows decoding together, with their shared left-padded KV cache.

    Row i is identified by its position in `keys` (the caller's handles);
    `lengths[i]` is how many real tokens its cache holds.
    """

    def __init__(self, solo: bool = False) -> None:
        self.solo = solo  # rows of one adapter PEFT cannot mix (see prefill)
        self.keys: list[Any] = []
        self.adapters: list[str] = []
        self.lengths: list[int] = []
        self._layers: list[tuple[Any, Any]] = []  # per layer (keys, values)
        self._width = 0  # cache length, padding included

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def width(self) -> int:
        return self._width

    def join(self, key: Any, adapter: str, prefilled: Prefilled) -> None:
        """Adds a prefilled row (its cache is taken over, not copied twice)."""
        import torch

        layers = _layers_of(prefilled.cache)
        if not self.keys:
            self._layers = layers
            self._width = prefilled.length
        else:
            width = max(self._width, prefilled.length)
            if width > self._width:
                self._layers = [
                    (
                        _pad_left(k, width - self._width),
                        _pad_left(v, width - self._width),
                    )
                    for k, v in self._layers
                ]
            grow = width - prefilled.length
            self._layers = [
                (
                    torch.cat([k, _pad_left(nk, grow)]),
                    torch.cat([v, _pad_left(nv, grow)]),
                )
                for (k, v), (nk, nv) in zip(self._layers, layers, strict=True)
            ]
            self._width = width
        self.keys.append(key)
        self.adapters.append(adapter)
        self.lengths.append(prefilled.length)

    def leave(self, gone: set[Any]) -> None:
        """Drops rows (finished, cancelled, past their deadline) and the
        padding columns no remaining row needs."""
        keep = [i for i, key in enumerate(self.keys) if key not in gone]
        if len(keep) == len(self.keys):
            return
        self.keys = [self.keys[i] for i in keep]
        self.adapters = [self.adapters[i] for i in keep]
        self.lengths = [self.lengths[i] for i in keep]
        if not keep:
            self._layers, self._width = [], 0
            return
        import torch

        index = torch.tensor(keep, device=self._layers[0][0].device)
        trim = self._width - max(self.lengths)  # padding every row has
        self._layers = [
            (
                k.index_select(0, index)[:, :, trim:],
                v.index_select(0, index)[:, :, trim:],
            )
            for k, v in self._layers
        ]
        self._width -= trim

    def step(self, model: Any, tokens: list[int]) -> Any:
        """Feeds each row its latest token; returns next-token logits [rows, vocab]."""
        import torch
        from transformers import DynamicCache

        rows, device = len(self.keys), device_of(model)
        mask = torch.zeros(rows, self._width + 1, dtype=torch.long)
        for i, length in enumerate(self.lengths):
            mask[i, self._width - length :] = 1
        cache = DynamicCache(self._layers)
        out = run_forward(
            model,
            self.adapters,
            self.solo,
            input_ids=torch.tensor(tokens, device=device).view(rows, 1),
            attention_mask=mask.to(device),
            position_ids=torch.tensor(self.lengths, device=device).view(rows, 1),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._layers = _layers_of(cache)
        self._width += 1
        self.lengths = [n + 1 for n in self.lengths]
        return out.logits[:, -1]


def run_forward(model: Any, adapters: list[str], solo: bool, **inputs: Any) -> Any:
    """One forward with row i under adapters[i].

    A solo batch (adapters PEFT cannot mix, e.g. DoRA) makes its adapter the
    active one. A mixed batch of plain LoRA adapters (named in the model's
    `lorafleet_plain`, kept by the engine) runs through lora_rows, which is
    bit-identical to PEFT's mixed-batch forward and cheaper; any other mixed
    batch goes through PEFT's `adapter_names`.
    """
    if solo:
        model.set_adapter(adapters[0])  # every row of a solo batch has it
        model.base_model.enable_adapter_layers()
        return model(**inputs)
    if not getattr(model, "peft_config", None):
        return model(**inputs)  # a plain or merged model: no adapters at all
    plain = getattr(model, "lorafleet_plain", None)
    if plain is not None and all(a == BASE_ADAPTER or a in plain for a in adapters):
        with lora_rows.rows(adapters):
            return lora_rows.inner_model(model)(**inputs)
    return model(**inputs, **forward_kwargs(model, adapters))


def device_of(model: Any) -> Any:
    return next(model.parameters()).device


def _layers_of(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _pad_left(t: Any, n: int) -> Any:
    """Zeros before the sequence axis (dim 2 of [batch, heads, seq, dim])."""
    if n == 0:
        return t
    import torch.nn.functional as F

    return F.pad(t, (0, 0, n, 0))
