"""Start-time checks and the worker for whole-model merges (TIES, SLERP, ...)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.config import Config
from services.common.convert import struct
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.jobs import JobContext
from services.common.modeling import classifier_model_labels
from services.common.paths import staged_directory
from services.merger import methods
from services.merger.finish import check_and_export
from services.merger.gate import check_tokenizer
from services.merger.model_merge import (
    ModelMergePlan,
    execute_model_merge,
    plan_model_merge,
    plan_stacked_merge,
)
from services.merger.quantized import check_exports
from services.merger.requests import MergeOutcome, ResolvedModelMerge
from services.merger.tokenizer_files import (
    check_shared_vocabulary,
    resolve_chat_template,
)

MODEL_KINDS = (
    common_pb2.ARTIFACT_KIND_BASE_MODEL,
    common_pb2.ARTIFACT_KIND_MERGED_MODEL,
)
PROGRESS_EVENTS = 20


def _model(get: Callable[[str], Any], artifact_id: str, field: str) -> Any:
    artifact = get(artifact_id)
    if artifact.kind not in MODEL_KINDS:
        kind = common_pb2.ArtifactKind.Name(artifact.kind)
        raise FailedPrecondition(
            f"{artifact_id} is a {kind}, not a model; model merges combine base or "
            "merged models (merge adapters with method 'lora' first)",
            field=field,
        )
    if not artifact.local_path:
        raise FailedPrecondition(f"artifact {artifact.id} has no local_path")
    labels = classifier_model_labels(Path(artifact.local_path))
    if labels is not None:
        raise FailedPrecondition(
            f"{artifact_id} is a sequence classifier (labels {labels}); model "
            "merges combine causal language models (their gate measures "
            "perplexity, which a classifier has no LM head for); merge the "
            "classification adapters into their base one at a time instead",
            field=field,
        )
    return artifact


def resolve_model_merge(request: Any, get: Callable[[str], Any]) -> ResolvedModelMerge:
    """Checks method, parameters and inputs, and plans the merge, before any work."""
    method = methods.get(request.method)
    n = len(request.input_model_ids)
    if not request.slices:  # a layer stack checks each slice instead
        method.check_inputs(n, bool(request.base_model_id))
        methods.parse_params(method, dict(request.params), n)
    if len(set(request.input_model_ids)) != n:
        raise InvalidArgument(
            "input_model_ids lists a model twice", field="input_model_ids"
        )
    inputs = [_model(get, i, "input_model_ids") for i in request.input_model_ids]
    base = (
        _model(get, request.base_model_id, "base_model_id")
        if request.base_model_id
        else None
    )
    tokenizer = (
        _model(get, request.tokenizer_source_id, "recipe")
        if request.tokenizer_source_id
        else None
    )
    plan = plan_for(request, base, inputs, tokenizer)
    check_exports(list(request.exports), plan.reference.directory)
    reference = tokenizer or base or inputs[0]
    check_tokenizer(
        request.gate,
        plan.tokenizer_source or plan.reference.directory,
        f"{reference.name}:{reference.version}",
    )
    return ResolvedModelMerge(request, base, inputs, plan, tokenizer)


def plan_for(
    request: Any, base: Any | None, inputs: list[Any], tokenizer: Any | None
) -> ModelMergePlan:
    """The merge plan of a request whose artifacts are resolved: headers (and
    tokenizer vocabularies) only, so Start and a re-run from the queue agree."""
    method = methods.get(request.method)
    base_dir = Path(base.local_path) if base else None
    input_dirs = [Path(a.local_path) for a in inputs]
    if request.slices:
        dirs = {a.id: Path(a.local_path) for a in [*inputs, *([base] if base else [])]}
        plan = plan_stacked_merge(
            method, list(request.slices), dirs, base_dir, input_dirs
        )
    else:
        params = methods.parse_params(
            method, dict(request.params), len(request.input_model_ids)
        )
        plan = plan_model_merge(method, params, base_dir, input_dirs)
    models = [*([base_dir] if base_dir else []), *input_dirs]
    source = Path(tokenizer.local_path) if tokenizer else None
    if source is not None:
        check_shared_vocabulary(source, models)
    template = resolve_chat_template(request.chat_template, models)
    if source is None and not template:
        return plan
    return dataclasses.replace(plan, tokenizer_source=source, chat_template=template)


def _slices_by_digest(slices: Any, artifacts: list[Any]) -> list[dict[str, Any]]:
    digest = {a.id: a.digest for a in artifacts}

    def source(entry: dict[str, Any] | None) -> dict[str, Any] | None:
        return {**entry, "model": digest[entry["model"]]} if entry else None

    return [
        {**s, "base": source(s.get("base")), "inputs": [source(e) for e in s["inputs"]]}
        for s in slices
    ]


def _plan(job: ResolvedModelMerge) -> ModelMergePlan:
    """The plan of a stored job (the queue keeps none): headers only."""
    return plan_for(job.request, job.base, job.inputs, job.tokenizer)


def run_model_merge(
    ctx: JobContext, job: ResolvedModelMerge, config: Config, registry: Any
) -> Any:
    from services.merger.jobs import evidence  # jobs imports us

    request = job.request
    plan = job.plan or _plan(job)
    names = ", ".join(f"{a.name}:{a.version}" for a in job.inputs)
    ctx.report(stage="merge", progress=0.02, message=f"{request.method} of {names}")
    final = config.staging_dir / f"merge-{ctx.job.id}"

    def on_tensor(done: int, total: int, name: str) -> None:
        ctx.check_cancelled()
        if done % max(1, total // PROGRESS_EVENTS) == 0 or done == total:
            ctx.report(
                stage="merge",
                progress=0.02 + 0.88 * done / total,
                message=f"{done}/{total} tensors (last {name})",
                step=done,
                total_steps=total,
            )

    provenance: dict[str, Any] = {
        "params": dict(request.params),
        "input_digests": [a.digest for a in job.inputs],
        "base_digest": job.base.digest if job.base else "",
    }
    if request.slices:
        # Models by digest, as input_digests: registry ids differ between
        # installs, and the provenance lands in the weights' headers, so ids
        # would give the same merge a different content digest on each.
        provenance["slices"] = _slices_by_digest(
            request.slices, [*job.inputs, *([job.base] if job.base else [])]
        )
        provenance["num_layers"] = plan.output_layers
    if job.tokenizer is not None:
        provenance["tokenizer_source_digest"] = job.tokenizer.digest
    if request.chat_template:
        provenance["chat_template"] = (
            request.chat_template if len(request.chat_template) < 64 else "custom"
        )
    try:
        with staged_directory(final) as tmp:
            stats = execute_model_merge(
                plan,
                tmp,
                output_dtype=request.output_dtype,
                on_tensor=on_tensor,
                provenance=provenance,
                max_shard_size=request.shard_size,
            )
            checked = check_and_export(
                ctx,
                tmp,
                stats,
                {
                    "kind": "models",
                    "merged": str(tmp),
                    "inputs": [str(Path(a.local_path)) for a in job.inputs],
                    # A layer stack changes the model's depth: its perplexity
                    # is bounded only when the request sets a factor.
                    "factor": (
                        request.gate.max_perplexity_factor
                        if plan.stack is not None
                        else request.gate.factor()
                    ),
                    "stacked": plan.stack is not None,
                    "layers": plan.output_layers,
                },
                request.gate,
                list(request.exports),
            )
        ctx.check_cancelled()
        metrics = {
            "tensors_merged": float(stats.tensors_merged),
            "tensors_total": float(stats.tensors_total),
            "max_abs_delta": stats.max_abs_delta,
            "merge_seconds": stats.seconds,
        }
        parents = [
            common_pb2.ParentRef(artifact_id=a.id, relation="merge_input")
            for a in job.inputs
        ]
        if job.base is not None:
            parents.append(
                common_pb2.ParentRef(artifact_id=job.base.id, relation="base_model")
            )
        if job.tokenizer is not None and job.tokenizer.id not in {
            p.artifact_id for p in parents
        }:
            parents.append(
                common_pb2.ParentRef(
                    artifact_id=job.tokenizer.id, relation="tokenizer_source"
                )
            )
        ctx.report(stage="register", progress=0.95, message="registering merged model")
        merged = registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                reuse_existing=True,
                kind=common_pb2.ARTIFACT_KIND_MERGED_MODEL,
                name=request.output_name,
                source_path=str(final.resolve()),
                expected_digest=checked.digest,
                metrics=metrics,
                tags=request.tags,
                metadata=struct(
                    {
                        **stats.provenance,
                        "input_model_ids": [a.id for a in job.inputs],
                        "base_model_id": job.base.id if job.base else "",
                        "output_dtype": request.output_dtype,
                        "shards": stats.written.shards,
                        "merge_job_id": ctx.job.id,
                        **evidence(checked),
                    }
                ),
                parents=parents,
            )
        ).artifact
    finally:
        shutil.rmtree(final, ignore_errors=True)
    ctx.report(
        stage="done",
        progress=1.0,
        message=f"merged model {merged.name}:{merged.version} ({merged.id})",
    )
    return MergeOutcome.of(merged.id, stats, checked)
