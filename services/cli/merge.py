"""`lorafleet merge --recipe recipe.yml --name NAME [--out DIR]`: a mergekit
recipe run by the suite's merger, the result registered (and, with --out,
written as a plain Hugging Face safetensors folder)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from services.cli.artifact_files import write_files
from services.cli.deployments import UsageError, address, connect, connection_parser


def _absolute(recipe: dict, folder: Path) -> dict:
    """Model folders in the recipe as absolute paths (mergekit reads them
    relative to where it runs; the merger runs elsewhere)."""

    def fix(value):
        if isinstance(value, str):
            path = (
                (folder / value).expanduser()
                if not os.path.isabs(value)
                else Path(value)
            )
            if path.is_dir():
                return str(path.resolve())
        return value

    if "base_model" in recipe:
        recipe["base_model"] = fix(recipe["base_model"])
    for entry in recipe.get("models") or []:
        if isinstance(entry, dict) and "model" in entry:
            entry["model"] = fix(entry["model"])
    for piece in recipe.get("slices") or []:
        for entry in (piece.get("sources") or []) if isinstance(piece, dict) else []:
            if isinstance(entry, dict) and "model" in entry:
                entry["model"] = fix(entry["model"])
    if recipe.get("tokenizer_source") not in (None, "base", "union"):
        recipe["tokenizer_source"] = fix(recipe["tokenizer_source"])
    return recipe


def cmd_merge(args) -> int:
    from lorafleet.v1 import common_pb2, merger_pb2, registry_pb2

    path = Path(args.recipe)
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read recipe {path}: {exc}") from None
    if not isinstance(recipe, dict):
        raise UsageError(f"{path} is not a mergekit recipe (a YAML mapping)")
    text = yaml.safe_dump(_absolute(recipe, Path.cwd()), sort_keys=False)
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty")
    with connect(args, "registry") as client:
        merger = client.stub("merger", address(args, "merger"))
        job = merger.StartMergeJob(
            merger_pb2.StartMergeJobRequest(recipe=text, output_name=args.name),
            timeout=args.timeout,
        ).job
        print(
            f"merge job {job.status.job_id}: {job.request.method} of "
            f"{len(job.request.input_model_ids)} models",
            file=sys.stderr,
        )
        final = job
        for reply in merger.WatchMergeJob(
            merger_pb2.WatchMergeJobRequest(job_id=job.status.job_id),
            timeout=args.wait,
        ):
            final = reply.job
            if reply.event.message:
                print(f"  {reply.event.stage}: {reply.event.message}", file=sys.stderr)
        if final.status.state != common_pb2.JOB_STATE_SUCCEEDED:
            error = final.status.error
            print(f"error: {error.code or 'FAILED'}: {error.message}", file=sys.stderr)
            return 2
        merged = client.registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=final.result.merged_model_id),
            timeout=args.timeout,
        ).artifact
        print(f"{merged.name}:{merged.version} {merged.id} {merged.digest}")
        if out is not None:
            write_files(client, merged, out)
    return 0


def add_merge_command(sub, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser(
        "merge",
        parents=[common, connection_parser()],
        help="run a mergekit YAML recipe and register the merged model",
        description=(
            "Runs a mergekit recipe (merge_method, base_model, models or "
            "slices with parameters, parameters, dtype, tokenizer_source, "
            "chat_template) on the suite's merger: models are "
            "registry refs or model folders (registered on the fly). The result "
            "gives mergekit's numbers; what lorafleet does not support is refused "
            "by name."
        ),
    )
    s.add_argument("--recipe", required=True, help="the mergekit YAML file")
    s.add_argument("--name", required=True, help="registry name of the merged model")
    s.add_argument("--out", help="also write the merged model here (HF folder)")
    s.add_argument("--merger", help="merger host:port (default from config)")
    s.add_argument(
        "--wait",
        type=float,
        default=6 * 3600.0,
        metavar="SECONDS",
        help="how long to watch the merge (default 6 h)",
    )
    s.set_defaults(func=cmd_merge)
