"""The baseline of bench/train_bench.py: a plain PEFT training loop, written well.

What someone who cares about speed writes without a platform: the same chat
template and answer-only labels as lorafleet (`tokenize_for_training`), each
batch padded only to its longest row (a DataLoader with a collate function),
the model's own causal-LM loss, AdamW
with transformers' linear schedule and gradient clipping at 1.0 (Trainer's
defaults, which lorafleet uses), fp32 on CPU with torch's default threads.
Variants for the report: `pad_to_max_length` (the old baseline, labelled as
such), `bf16_autocast` and `compile` (does either pay on this machine?).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class LoopOptions:
    pad_to_max_length: bool = False
    bf16_autocast: bool = False
    compile: bool = False


def padded_batch(features: list[dict], width: int, pad_id: int) -> dict:
    """input_ids / attention_mask / labels, padded on the right to `width`."""
    import torch

    def pad(key: str, fill: int) -> list[list[int]]:
        return [f[key] + [fill] * (width - len(f[key])) for f in features]

    return {
        "input_ids": torch.tensor(pad("input_ids", pad_id)),
        "attention_mask": torch.tensor(
            [
                [1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"]))
                for f in features
            ]
        ),
        "labels": torch.tensor(pad("labels", -100)),
    }


def train_loop(
    model_dir: str,
    features: list[dict],
    *,
    steps: int,
    batch: int,
    seq: int,
    rank: int,
    lr: float,
    seed: int,
    targets: list[str],
    options: LoopOptions,
) -> tuple[object, dict]:
    """Trains; returns (model, {tokens, seconds, step_seconds, train_loss_own})."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        get_linear_schedule_with_warmup,
        set_seed,
    )

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            lora_dropout=0.05,
            target_modules=targets,
            task_type="CAUSAL_LM",
        ),
    )
    pad_id = model.config.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, steps)
    forward = torch.compile(model) if options.compile else model
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    rows = [features[int(order[i % len(features)])] for i in range(steps * batch)]

    def collate(picked: list[dict]) -> dict:
        width = (
            seq
            if options.pad_to_max_length
            else max(len(f["input_ids"]) for f in picked)
        )
        return padded_batch(picked, width, pad_id)

    loader = torch.utils.data.DataLoader(rows, batch_size=batch, collate_fn=collate)
    model.train()
    tokens, step_seconds, loss = 0, [], None
    # Seeded right before the loop, as Trainer does: with the same seed the
    # loop and lorafleet share the LoRA init, the batches and every dropout
    # mask, so their held-out losses differ only by float summation order.
    set_seed(seed)
    started = time.perf_counter()
    t0 = started
    for inputs in loader:
        tokens += int(inputs["attention_mask"].sum())
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=options.bf16_autocast):
            loss = forward(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step_seconds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
    seconds = time.perf_counter() - started
    return model, {
        "tokens": float(tokens),
        "seconds": seconds,
        "step_seconds": step_seconds,
        "train_loss_own": float(loss) if loss is not None else float("nan"),
    }
