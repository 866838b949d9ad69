"""Real PEFT adapters on tiny models, and PEFT's own merge as the reference."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def make_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    r: int = 4,
    alpha: float = 6,
    use_rslora: bool = False,
    use_dora: bool = False,
    target_modules: list[str] | str = "all-linear",
    **lora_kwargs,
) -> dict[str, torch.Tensor]:
    """Saves a PEFT adapter with random (non-zero) lora_B and DoRA magnitudes.

    Returns PEFT's merge_and_unload() state dict, the merge to reproduce.
    lora_B starts at zero and magnitudes at ||W||, so without randomising them
    a merge that ignored the adapter would pass.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        use_rslora=use_rslora,
        use_dora=use_dora,
        target_modules=target_modules,
        lora_dropout=0.0,
        **lora_kwargs,
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
            elif "lora_magnitude_vector" in name:
                param.mul_(1 + 0.3 * torch.rand(param.shape, generator=gen))
            elif "modules_to_save" in name:
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(str(out_dir))
    merged = peft_model.merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


# Checkpoint name -> transformers v5 in-memory name (GPT-NeoX's WeightRenaming).
RENAMES = {"embed_out.": "lm_head."}


def max_difference(
    out_dir: Path, reference: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Per-tensor max |ours - PEFT| over every tensor in our output files."""
    reference = dict(reference)
    for name in list(reference):
        for loaded_prefix in RENAMES.values():
            if name.startswith(loaded_prefix):
                stored = next(k for k, v in RENAMES.items() if v == loaded_prefix)
                reference.setdefault(
                    stored + name[len(loaded_prefix) :], reference[name]
                )
    ours: dict[str, torch.Tensor] = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        ours.update(load_file(str(f)))
    assert ours, f"no safetensors written in {out_dir}"
    diffs = {}
    for name, tensor in ours.items():
        assert name in reference, f"{name} is not in PEFT's merged model"
        assert tensor.shape == reference[name].shape, name
        diffs[name] = float((tensor.float() - reference[name].float()).abs().max())
    return diffs
