"""GGUF export details: llama.cpp's layout, vocabulary and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.gguf_export import _permute, export_gguf
from services.merger.quantized import QuantizedExport, check_exports


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (9, 3)])
def test_qk_permutation_is_what_transformers_reverses(heads, kv_heads):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    rows = (kv_heads if kv_heads != heads else heads) * 8
    w = np.arange(rows * 6, dtype=np.float32).reshape(rows, 6)
    permuted = _permute(w, heads, kv_heads)
    assert not np.array_equal(permuted, w)
    back = LlamaTensorProcessor()._reverse_permute_weights(permuted, heads, kv_heads)
    assert np.array_equal(back, w)


def test_gguf_file_holds_llama_cpp_metadata_and_vocabulary(tiny_model_dir, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    report = export_gguf(tiny_model_dir, tmp_path / "model.gguf", "gguf_q4_0")
    reader = gguf.GGUFReader(str(tmp_path / "model.gguf"))
    fields = {k: f.contents() for k, f in reader.fields.items()}
    config = json.loads((tiny_model_dir / "config.json").read_text())
    tokenizer = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == config["num_hidden_layers"]
    assert fields["llama.attention.head_count_kv"] == config["num_key_value_heads"]
    assert fields["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q4_0)
    tokens, types = fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
    assert len(tokens) == config["vocab_size"]
    specials = {a["id"] for a in tokenizer["added_tokens"] if a["special"]}
    assert {i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL} == specials
    assert len(fields["tokenizer.ggml.merges"]) == len(tokenizer["model"]["merges"])
    assert fields["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    assert "tokenizer.chat_template" in fields
    types_by_name = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types_by_name["token_embd.weight"] == "Q8_0"  # embeddings stay 8-bit
    assert types_by_name["blk.0.attn_q.weight"] == "Q4_0"
    assert types_by_name["blk.0.attn_norm.weight"] == "F32"
    assert report.tensor_types == {"Q8_0": 2, "Q4_0": 14, "F32": 5}
    # the tokenizer rebuilt from the GGUF splits text as the original does
    text = "Order for Ana: 2 x socks, ship to Porto."
    ours = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rebuilt = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert rebuilt(text).input_ids == ours(text).input_ids


def test_gguf_export_refuses_what_it_cannot_write(tiny_model_factory):
    gguf_q8 = [QuantizedExport("gguf_q8_0")]
    with pytest.raises(FailedPrecondition, match="GGUF export supports llama"):
        check_exports(gguf_q8, tiny_model_factory("gpt2"))
    check_exports([QuantizedExport("bnb_int8")], tiny_model_factory("gpt2"))
    check_exports(gguf_q8, tiny_model_factory("qwen2"))
    with pytest.raises(InvalidArgument, match="valid formats: GGUF_Q8_0"):
        check_exports([QuantizedExport("gguf_q2_k")])
