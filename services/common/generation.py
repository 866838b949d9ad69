"""Batched text generation shared by the validator and the inference service."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Generated:
    text: str
    prompt_tokens: int
    completion_tokens: int
    hit_eos: bool
    # The answer's token ids, the end token left out.
    token_ids: list[int] = field(default_factory=list)


def eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def generate_batch(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    fixed_length: bool = False,
) -> tuple[list[Generated], float]:
    """Generates for each prompt (left-padded batches); returns outputs and seconds.

    `fixed_length` forces exactly `max_new_tokens` per prompt, so two models can
    be timed on the same amount of work whatever they would have answered.
    """
    import torch

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    stop = eos_ids(model, tokenizer)
    results: list[Generated] = []
    started = time.perf_counter()
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            enc = tokenizer(
                chunk, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=max_new_tokens if fixed_length else None,
                    do_sample=temperature > 0,
                    temperature=temperature if temperature > 0 else None,
                    top_p=top_p if temperature > 0 else None,
                    top_k=None,
                    eos_token_id=stop,
                    pad_token_id=tokenizer.pad_token_id,
                )
            width = enc["input_ids"].shape[1]
            for row, mask in zip(out, enc["attention_mask"], strict=True):
                new = row[width:].tolist()
                hit = False
                for i, tok in enumerate(new):
                    if tok in stop:
                        new, hit = new[:i], True
                        break
                text = tokenizer.decode(new, skip_special_tokens=True)
                results.append(
                    Generated(
                        text=text,
                        prompt_tokens=int(mask.sum()),
                        completion_tokens=len(new) + (1 if hit else 0),
                        hit_eos=hit,
                        token_ids=new,
                    )
                )
    finally:
        tokenizer.padding_side = old_side
    return results, time.perf_counter() - started
