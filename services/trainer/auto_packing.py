"""packing_mode auto: pack where it pays and is safe, group by length where
packing would leak, leave well alone where there is little padding."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from services.common.modeling import model_type_of
from services.trainer.data import PACKABLE, apply_packing, group_by_length
from services.trainer.model_setup import packing_leak
from services.trainer.spec import TrainConfig

# packing_mode auto packs (or groups by length) only when per-batch padding
# would be at least this share of the positions a step computes: below it,
# packing's longer rows cost more memory (and block-diagonal attention more
# time) than the padding it removes (measured with bench/train_bench.py on the
# demo data, 5% padding: no faster, 1.65x the peak memory).
AUTO_PACKING_MIN_PADDING = 0.2


def padding_share(lengths: list[int], batch_size: int, seed: int) -> float:
    """The share of positions that are padding when random batches of
    `batch_size` rows are padded to their longest row (an estimate from 256
    seeded draws; a private generator, so training's RNG is untouched)."""
    if not lengths or batch_size < 2:
        return 0.0
    draw = random.Random(seed)
    size = min(batch_size, len(lengths))
    real = padded = 0
    for _ in range(256):
        batch = draw.sample(lengths, size)
        real += sum(batch)
        padded += max(batch) * size
    return 1.0 - real / padded if padded else 0.0


def resolve_packing(cfg: TrainConfig, data, model, base_dir: Path) -> TrainConfig:
    """packing_mode "auto": when padding would be a large share of each batch,
    pack causal-LM examples if the model keeps packed examples apart (probed
    on the real model), else group rows by length. A request that asked for
    group_by_length itself keeps it and is not packed. The decision and its
    numbers are recorded with the adapter."""
    if cfg.packing_mode != "auto" or cfg.packing or cfg.group_by_length:
        return cfg
    if data.task == "preference":
        return cfg  # a pair's rows are padded together: neither packed nor grouped
    share = padding_share(
        [len(f.get("input_ids", ())) for f in data.train], cfg.batch_size, cfg.seed
    )
    decision: dict = {"padding_share": round(share, 4), "packed": False}
    data.extra["auto_packing"] = decision
    if share < AUTO_PACKING_MIN_PADDING:
        return cfg  # little padding to remove
    if data.task in PACKABLE:
        problem = packing_leak(model, model_type_of(base_dir))
        if not problem:
            apply_packing(data, cfg.max_seq_length)
            decision["packed"] = True
            return dataclasses.replace(cfg, packing=True)
        decision["packing_skipped"] = problem
    group_by_length(data)
    decision["grouped"] = True
    return dataclasses.replace(cfg, group_by_length=True)
