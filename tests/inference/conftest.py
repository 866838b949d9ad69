"""The tiny PEFT model the batching tests share: two LoRA adapters, one DoRA."""

from __future__ import annotations

import pytest

from tests.inference.helpers import CORPUS
from tests.tiny_models import build_tiny_model, build_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("batch")
    build_tokenizer(root / "tok", CORPUS)
    path = build_tiny_model(root / "model", root / "tok")
    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = dict(target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, **lora), "a1")
    model.add_adapter("a2", LoraConfig(r=4, lora_alpha=8, **lora))
    model.add_adapter("d1", LoraConfig(r=4, lora_alpha=8, use_dora=True, **lora))
    model.eval()
    return model, AutoTokenizer.from_pretrained(path)
