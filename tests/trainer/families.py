"""Tiny random configs of ten causal-LM families (hidden 64, 2 layers) for tests."""

from __future__ import annotations

import shutil
from pathlib import Path

FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "phi3",
    "gpt2",
    "gpt_neox",
    "falcon",
    "opt",
    "bloom",
)
HIDDEN, FFN, LAYERS, HEADS = 64, 128, 2, 4


def tiny_config(family: str, vocab: int, pad: int, eos: int):
    """A config small enough to train two steps in about a second on CPU."""
    import transformers as tf

    ids = dict(vocab_size=vocab, pad_token_id=pad, eos_token_id=eos, bos_token_id=eos)
    decoder = dict(
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=512,
        **ids,
    )
    if family in ("llama", "mistral", "qwen2"):
        cls = {"llama": tf.LlamaConfig, "mistral": tf.MistralConfig}.get(
            family, tf.Qwen2Config
        )
        return cls(num_key_value_heads=2, tie_word_embeddings=False, **decoder)
    if family == "gemma":
        return tf.GemmaConfig(num_key_value_heads=2, head_dim=16, **decoder)
    if family == "phi3":
        return tf.Phi3Config(num_key_value_heads=2, **decoder)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(**decoder)
    if family == "gpt2":
        return tf.GPT2Config(
            n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=512, **ids
        )
    if family == "falcon":
        return tf.FalconConfig(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            **ids,
        )
    if family == "opt":
        return tf.OPTConfig(
            hidden_size=HIDDEN,
            ffn_dim=FFN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            word_embed_proj_dim=HIDDEN,
            max_position_embeddings=512,
            **ids,
        )
    if family == "bloom":
        return tf.BloomConfig(hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS, **ids)
    raise ValueError(f"no tiny config for {family}")


def build_family_model(out_dir: Path, tokenizer_dir: Path, family: str) -> Path:
    """Saves a seeded random `family` model in safetensors beside the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(0)
    config = tiny_config(
        family, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id
    )
    model = AutoModelForCausalLM.from_config(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for f in tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy(f, out_dir / f.name)
    return out_dir
