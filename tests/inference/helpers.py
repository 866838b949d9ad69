"""Shared by the inference tests: a tiny PEFT model and the reference output."""

from __future__ import annotations

from services.inference.batch import BASE_ADAPTER

CORPUS = ["hello world, an order for Ana: two coffees and a cake, please."] * 20


def alone(model, ids: list[int], adapter: str, new: int) -> list[int]:
    """The reference: `generate` with this request's adapter and nothing else."""
    import torch

    with torch.inference_mode():
        if adapter == BASE_ADAPTER:
            with model.disable_adapter():
                out = model.generate(
                    torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new,
                    do_sample=False, pad_token_id=0,
                )  # fmt: skip
        else:
            model.set_adapter(adapter)
            out = model.generate(
                torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip
    return out[0, len(ids) :].tolist()
