"""`lorafleet models export REF DIR`: an artifact as the folder the plain
libraries load.

A model (base or merged) becomes a Hugging Face safetensors folder. An
adapter becomes a standard PEFT folder whose `base_model_name_or_path` is the
base's registry name (portable, unlike the store path it was trained from),
with the base's digest and the adapter's registry facts in `lorafleet.json`
beside it, so whoever loads it elsewhere can check they have the same base.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.cli.artifact_files import write_files
from services.cli.deployments import UsageError, connect, connection_parser

SIDECAR = "lorafleet.json"


def cmd_export(args) -> int:
    from lorafleet.v1 import common_pb2, registry_pb2
    from services.common.convert import from_struct

    out = Path(args.dir)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; give a new or empty folder")
    with connect(args, "registry") as client:
        artifact = client.registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=args.ref), timeout=args.timeout
        ).artifact
        if artifact.kind == common_pb2.ARTIFACT_KIND_DATASET:
            raise UsageError(f"{args.ref} is a dataset; export models and adapters")
        write_files(client, artifact, out)
        meta = from_struct(artifact.metadata)
        if artifact.kind == common_pb2.ARTIFACT_KIND_ADAPTER:
            base_name = str(meta.get("base_model_name", "") or "")
            if not base_name and meta.get("base_model_id"):
                base_name = client.registry.GetArtifact(
                    registry_pb2.GetArtifactRequest(id=meta["base_model_id"]),
                    timeout=args.timeout,
                ).artifact.name
            config_path = out / "adapter_config.json"
            config = json.loads(config_path.read_text())
            config["base_model_name_or_path"] = base_name or None
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / SIDECAR).write_text(
        json.dumps(
            {
                "artifact_id": artifact.id,
                "name": artifact.name,
                "version": artifact.version,
                "digest": artifact.digest,
                "kind": common_pb2.ArtifactKind.Name(artifact.kind),
                "base_model_name": str(meta.get("base_model_name", "") or ""),
                "base_model_digest": str(meta.get("base_model_digest", "") or ""),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"{artifact.name}:{artifact.version} {artifact.id} -> {out}")
    if artifact.kind == common_pb2.ARTIFACT_KIND_ADAPTER:
        print(
            "load with: PeftModel.from_pretrained(<the base, "
            f"digest {meta.get('base_model_digest', '?')}>, {str(out)!r})",
            file=sys.stderr,
        )
    return 0


def add_export_command(models, common: argparse.ArgumentParser) -> None:
    s = models.add_parser(
        "export",
        parents=[common, connection_parser()],
        help="write a model as an HF folder, an adapter as a PEFT folder",
    )
    s.add_argument("ref", help="id, name, name:version or name@alias")
    s.add_argument("dir", help="a new or empty folder")
    s.set_defaults(func=cmd_export)
