"""GGUF export of a merged model, the file format llama.cpp serves, via `gguf`.

Written the way llama.cpp's own convert_hf_to_gguf.py writes a llama/qwen2
model: hyperparameters under the architecture's keys, GGUF tensor names from
gguf's TensorNameMap, llama's q/k rows permuted to GGML's rope layout, the
byte-level BPE vocabulary with token types, merges, special ids and chat
template, and `tokenizer.ggml.pre` found by llama.cpp's token-hash check.
Tensors are read, quantised (gguf.quants) and written one at a time.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition

# format -> (weight type, embedding/output type, GGUF file type)
GGUF_FORMATS = {
    "gguf_q8_0": ("Q8_0", "Q8_0", "MOSTLY_Q8_0"),
    # As llama.cpp's Q4_0 files: 4-bit blocks, token embeddings kept at 8 bits.
    "gguf_q4_0": ("Q4_0", "Q8_0", "MOSTLY_Q4_0"),
}
ARCHITECTURES = ("llama", "qwen2")
# llama.cpp's pre-tokenizer probe (convert_hf_to_gguf.py, get_vocab_base_pre):
# the sha256 of the token ids of this text names the pre-tokenizer regex.
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ "
    "(multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 "
    "33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? "
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, "
    "'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
}
_ROWS_PER_CHUNK = 4096


@dataclass
class GgufReport:
    file: str
    tensor_types: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _config(model_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"{model_dir} has no readable config.json") from exc


def _rope_theta(config: dict[str, Any]) -> float:
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind not in ("default", None):
        raise FailedPrecondition(
            f"GGUF export supports default RoPE only; this model uses {kind!r} "
            "rope scaling"
        )
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def check_exportable(model_dir: Path) -> None:
    """Refuses, before any work, a model the GGUF writer cannot represent."""
    config = _config(model_dir)
    arch = config.get("model_type")
    if arch not in ARCHITECTURES:
        raise FailedPrecondition(
            f"GGUF export supports {', '.join(ARCHITECTURES)} models; this one is "
            f"{arch!r} (export BNB_INT8 or BNB_NF4 instead)",
            field="exports",
        )
    _rope_theta(config)
    _tokenizer_json(model_dir)


def _tokenizer_json(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer.json"
    try:
        tok = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(
            f"GGUF export needs the model's tokenizer.json ({exc})", field="exports"
        ) from exc
    model, decoder = tok.get("model") or {}, tok.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        raise FailedPrecondition(
            "GGUF export supports byte-level BPE tokenizers (GPT-2 style); this "
            f"tokenizer is {model.get('type')} with a {decoder.get('type')} decoder",
            field="exports",
        )
    return tok


def _pre_tokenizer(model_dir: Path) -> tuple[str, str | None]:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(CHKTXT).ids
    digest = sha256(str(ids).encode()).hexdigest()
    if digest in KNOWN_PRE:
        return KNOWN_PRE[digest], None
    return "default", (
        f"pre-tokenizer not recognised (token hash {digest[:12]}...); wrote "
        "tokenizer.ggml.pre='default', so llama.cpp may split text slightly "
        "differently from the Hugging Face tokenizer"
    )


def _adds_bos(model_dir: Path, special: Any) -> bool:
    """Whether the tokenizer puts BOS in front of text, as llama.cpp must."""
    from tokenizers import Tokenizer

    bos = special.special_token_ids.get("bos")
    ids = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode("a").ids
    return bos is not None and bool(ids) and ids[0] == bos


def _vocabulary(
    tok: dict[str, Any], vocab_size: int
) -> tuple[list[str], list[int], list[str]]:
    """Tokens, GGUF token types and merges, as llama.cpp's _set_vocab_gpt2."""
    import gguf

    by_id = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok.get("added_tokens") or []}
    by_id.update({i: a["content"] for i, a in added.items()})
    size = max(vocab_size, max(by_id) + 1)
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(
                gguf.TokenType.CONTROL
                if added[i].get("special")
                else gguf.TokenType.USER_DEFINED
            )
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    return tokens, [int(t) for t in types], merges


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF rotary halves -> GGML interleaved."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _quantize(data: np.ndarray, qtype: Any) -> np.ndarray:
    """gguf.quants.quantize, a block of rows at a time to bound memory."""
    from gguf.quants import quant_shape_to_byte_shape, quantize

    out = np.empty(quant_shape_to_byte_shape(data.shape, qtype), dtype=np.uint8)
    for i in range(0, data.shape[0], _ROWS_PER_CHUNK):
        out[i : i + _ROWS_PER_CHUNK] = quantize(data[i : i + _ROWS_PER_CHUNK], qtype)
    return out


def _stored(shape: tuple[int, ...], qtype: Any) -> tuple[tuple[int, ...], Any, int]:
    """(numpy shape, numpy dtype, bytes) of a tensor as the file stores it."""
    import gguf

    count = int(np.prod(shape))
    if qtype == gguf.GGMLQuantizationType.F32:
        return shape, np.dtype(np.float32), count * 4
    if qtype == gguf.GGMLQuantizationType.F16:
        return shape, np.dtype(np.float16), count * 2
    byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape))


def export_gguf(model_dir: Path, out_file: Path, fmt: str) -> GgufReport:
    """Writes `model_dir` (safetensors) as a quantised GGUF file."""
    import gguf
    import torch

    from services.merger.lora_merge import LayoutReader
    from services.merger.safetensors_io import read_layout

    check_exportable(model_dir)
    config = _config(model_dir)
    arch = config["model_type"]
    weight_name, embed_name, file_type = GGUF_FORMATS[fmt]
    weight_q = gguf.GGMLQuantizationType[weight_name]
    embed_q = gguf.GGMLQuantizationType[embed_name]
    layout = read_layout(model_dir)
    n_layers = int(config["num_hidden_layers"])
    n_head = int(config["num_attention_heads"])
    n_kv = int(config.get("num_key_value_heads") or n_head)
    hidden = int(config["hidden_size"])
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layers)
    report = GgufReport(out_file.name)

    writer = gguf.GGUFWriter(str(out_file), arch)
    writer.add_name(str(config.get("_model_name_or_path") or model_dir.name))
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_dimension_count(int(config.get("head_dim") or hidden // n_head))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(int(gguf.LlamaFileType[file_type]))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tok = _tokenizer_json(model_dir)
    tokens, types, merges = _vocabulary(tok, int(config["vocab_size"]))
    pre, note = _pre_tokenizer(model_dir)
    if note:
        report.notes.append(note)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=False, n_vocab=len(tokens))
    special.merges = merges
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:
        writer.add_add_bos_token(_adds_bos(model_dir, special))
    pre_tokenizer = tok.get("pre_tokenizer") or {}
    writer.add_add_space_prefix(bool(pre_tokenizer.get("add_prefix_space", False)))

    plan: list[tuple[str, str, Any]] = []  # (hf name, gguf name, type)
    for name, info in layout.tensors.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        target = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise FailedPrecondition(
                f"GGUF export has no llama.cpp name for tensor {name}",
                field="exports",
            )
        qtype = gguf.GGMLQuantizationType.F32
        if len(info.shape) == 2:
            block = gguf.GGML_QUANT_SIZES[weight_q][0]
            embedding = target in ("token_embd.weight", "output.weight")
            wanted = embed_q if embedding else weight_q
            if info.shape[-1] % block == 0:
                qtype = wanted
            else:
                qtype = gguf.GGMLQuantizationType.F16
                report.notes.append(
                    f"{name} has rows of {info.shape[-1]} values, not a multiple of "
                    f"{block}; kept as F16"
                )
        plan.append((name, target, qtype))
        writer.add_tensor_info(target, *_stored(info.shape, qtype), raw_dtype=qtype)
        report.tensor_types[qtype.name] = report.tensor_types.get(qtype.name, 0) + 1

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    with ExitStack() as stack:
        reader = LayoutReader(layout, stack)
        for name, target, qtype in plan:
            data = reader.get_tensor(name).to(torch.float32).numpy()
            if arch == "llama" and target.endswith("attn_q.weight"):
                data = _permute(data, n_head, n_head)
            elif arch == "llama" and target.endswith("attn_k.weight"):
                data = _permute(data, n_head, n_kv)
            if qtype == gguf.GGMLQuantizationType.F32:
                out = np.ascontiguousarray(data, dtype=np.float32)
            elif qtype == gguf.GGMLQuantizationType.F16:
                out = data.astype(np.float16)
            else:
                out = _quantize(data, qtype)
            writer.write_tensor_data(out)
            del data, out
    writer.close()
    return report
