"""Inputs for the README's "Coming from mergekit or PEFT": two PEFT adapters on
SmolLM2 (saved as a PEFT user saves them) and the two fine-tuned model folders
they merge into (what mergekit users have), beside a copy of the base.

    .venv/bin/python examples/interop/make_fixtures.py <SmolLM2 folder> <out dir>

The LoRA B matrices are random (std 0.01): stand-ins for real fine-tunes,
different enough that merging them is not a no-op.
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

base_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
tok = AutoTokenizer.from_pretrained(base_dir)
shutil.copytree(base_dir, out / "smol-base", dirs_exist_ok=True)
for i, name in enumerate(("math", "code")):
    torch.manual_seed(i)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    )
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    peft.save_pretrained(out / f"{name}-adapter")
    # PEFT writes target_modules from a set, in an order that changes with
    # Python's hash seed: sorted, the folder (and its digest) is the same on
    # every run.
    config_path = out / f"{name}-adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    merged = peft.merge_and_unload()
    merged.save_pretrained(out / f"smol-{name}")
    tok.save_pretrained(out / f"smol-{name}")
print("ok")
