"""Packing: several short examples per row, with attention kept inside each.

Rows carry `position_ids` that restart at 0 for every example and no
`attention_mask`; transformers' masking utilities then build a block-diagonal
causal mask from the restarts (and flash attention runs variable-length), so a
token never attends to another example. The model must run with
`use_cache=False` for that detection to happen (see model_setup); not every
architecture honours it, which model_setup probes before training.

The first label of each example is masked: in a packed row it would otherwise
be predicted from the previous example's last token, which never happens when
the example is trained alone.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any


def pack(features: list[dict], max_length: int) -> list[dict]:
    """Best-fit decreasing bins of at most `max_length` tokens, one row each."""
    lengths = [len(f["input_ids"]) for f in features]
    order = sorted(range(len(features)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens still free, bin), sorted
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, b = free.pop(k)
        else:
            room, b = max_length, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - n > 0:
            bisect.insort(free, (room - n, b))
    return [_row([features[i] for i in sorted(members)]) for members in bins]


def _row(members: list[dict]) -> dict[str, list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for f in members:
        ids.extend(f["input_ids"])
        labels.extend([-100, *f["labels"][1:]])
        positions.extend(range(len(f["input_ids"])))
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


@dataclass
class PackedCollator:
    """Pads packed rows to the batch's longest; the padding is an example too.

    Padding gets restarting position ids and -100 labels, so it neither sees
    nor is seen by real tokens, and no attention mask is needed.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)

        def padded(key: str, fill) -> Any:
            return torch.tensor([f[key] + fill(width - len(f[key])) for f in features])

        return {
            "input_ids": padded("input_ids", lambda n: [self.pad_token_id] * n),
            "labels": padded("labels", lambda n: [-100] * n),
            "position_ids": padded("position_ids", lambda n: list(range(n))),
        }
