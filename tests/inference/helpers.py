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


def register_random_adapter(registry, tiny_model_dir, base, staging, name, seed):
    """A random LoRA adapter on `base`, registered (with the base it was
    made for) as `name`; its staging copy is removed. Returns the artifact."""
    import shutil

    from lorafleet.v1 import common_pb2, registry_pb2
    from services.common.convert import struct
    from tests.merger.helpers import make_adapter

    make_adapter(tiny_model_dir, staging, seed=seed)
    try:
        return registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_ADAPTER,
                name=name,
                source_path=str(staging),
                metadata=struct(
                    {"base_model_id": base.id, "base_model_digest": base.digest}
                ),
            ),
            timeout=120,
        ).artifact
    finally:
        shutil.rmtree(staging, ignore_errors=True)
