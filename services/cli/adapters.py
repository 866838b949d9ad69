"""`lorafleet models import <PEFT adapter folder> [--base REF]`.

A folder saved by PEFT's `save_pretrained` (or Axolotl, LLaMA-Factory,
Unsloth, which save the same) is registered as an ADAPTER with its base: the
`--base` ref, else the model its `base_model_name_or_path` names when that is
a registered name, name:version, name@alias, id or sha256 digest. Anything
else is refused before a byte is copied: the base decides where an adapter
may run, so an adapter without one would be refused later by every service.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import grpc

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)


class AdapterImportError(ValueError):
    """The folder cannot be imported as it is; the message says what to do."""


def is_adapter_folder(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file()


def read_adapter_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise AdapterImportError(f"{folder}/adapter_config.json: {exc}") from None
    if not isinstance(config, dict):
        raise AdapterImportError(f"{folder}/adapter_config.json is not an object")
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterImportError(
            f"{folder} holds a {config.get('peft_type')} adapter; lorafleet serves "
            "and merges LoRA adapters (LoRA, rsLoRA, DoRA)"
        )
    if not (folder / "adapter_model.safetensors").is_file():
        if (folder / "adapter_model.bin").is_file():
            raise AdapterImportError(
                f"{folder} has adapter_model.bin (a pickle, which lorafleet never "
                "loads: unpickling runs code). Convert it where you trust the file: "
                'python -c "import torch; from safetensors.torch import save_file; '
                "save_file(torch.load('adapter_model.bin', weights_only=True), "
                "'adapter_model.safetensors')\" in that folder, then import again"
            )
        raise AdapterImportError(f"{folder} has no adapter_model.safetensors")
    return config


def resolve_base(registry: Any, config: dict[str, Any], base_ref: str | None) -> Any:
    """The registered base model: `base_ref`, else what the config names."""
    from lorafleet.v1 import registry_pb2

    named = str(config.get("base_model_name_or_path") or "")
    candidates = [base_ref] if base_ref else [named] if named else []
    for ref in candidates:
        if ref.startswith("sha256:"):
            found = registry.ListArtifacts(
                registry_pb2.ListArtifactsRequest(
                    filter=f'digest = "{ref}"', page_size=1
                ),
                timeout=60,
            ).artifacts
            if found:
                return found[0]
            continue
        try:
            return registry.GetArtifact(
                registry_pb2.GetArtifactRequest(id=ref), timeout=60
            ).artifact
        except grpc.RpcError as exc:
            # --base: the registry's own NOT_FOUND says it best; a name from
            # the config that is not registered gets the advice below.
            if exc.code() != grpc.StatusCode.NOT_FOUND or base_ref:
                raise
    if base_ref:
        raise AdapterImportError(f"--base {base_ref}: no registered model")
    shown = f"names {named!r}, which" if named else "names no base, and"
    raise AdapterImportError(
        f"the adapter's base_model_name_or_path {shown} is not a registered model; "
        "register the base first (lorafleet models import <model> --name NAME) "
        "and pass --base NAME (or its id, name:version or sha256 digest)"
    )


def import_adapter(
    source: Path, name: str, base_ref: str | None, staging_dir: Path, registry: Any
) -> Any:
    """Registers the PEFT adapter in `source` with its base; returns the artifact."""
    from lorafleet.v1 import common_pb2, registry_pb2
    from services.common.convert import struct

    config = read_adapter_config(source)
    base = resolve_base(registry, config, base_ref)
    if base.kind not in (
        common_pb2.ARTIFACT_KIND_BASE_MODEL,
        common_pb2.ARTIFACT_KIND_MERGED_MODEL,
    ):
        raise AdapterImportError(
            f"{base.name}:{base.version} is not a model; an adapter's base is a "
            "BASE_MODEL or MERGED_MODEL"
        )
    method = (
        "dora"
        if config.get("use_dora")
        else "rslora"
        if config.get("use_rslora")
        else "lora"
    )
    metadata = {
        "base_model_id": base.id,
        "base_model_digest": base.digest,
        "base_model_name": base.name,
        "method": method,
        "source": "peft import",
        "imported_from": str(config.get("base_model_name_or_path") or ""),
    }
    staging = staging_dir / f"import-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    try:
        for file in (*ADAPTER_FILES, *TOKENIZER_FILES):
            if (source / file).is_file():
                shutil.copy2(source / file, staging / file)
        return registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_ADAPTER,
                name=name,
                source_path=str(staging.resolve()),
                metadata=struct(metadata),
                parents=[
                    common_pb2.ParentRef(artifact_id=base.id, relation="base_model")
                ],
            ),
            timeout=600,
        ).artifact
    finally:
        shutil.rmtree(staging, ignore_errors=True)
