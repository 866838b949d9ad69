"""Merge jobs: every check at Start, the merge in a worker, registration after.

Anything a Start can reject (missing fields, unknown ids, an adapter trained on
another base, mismatched tensor shapes) is checked synchronously, so the caller
gets the error from StartMergeJob instead of a job that fails later.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.adapter_base import check_adapter_base
from services.common.config import Config
from services.common.convert import from_struct, struct
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.jobqueue import DurableJobEngine, JobStore
from services.common.jobs import Job, JobContext
from services.common.lookups import registered_by_job
from services.common.paths import staged_directory
from services.common.retry import Patience, Patient
from services.merger.classifier import plan_classifier
from services.merger.finish import Checked, check_and_export
from services.merger.gate import BASE_QUANTIZATIONS, check_tokenizer
from services.merger.lora_merge import MergePlan, execute_merge, plan_merge
from services.merger.model_jobs import resolve_model_merge, run_model_merge
from services.merger.output import sweep_stale_staging
from services.merger.quantized import check_exports
from services.merger.recipe_inputs import from_recipe
from services.merger.records import MERGE_JOB_CODEC
from services.merger.requests import (
    MergeOutcome,
    MergeRequest,
    ResolvedMerge,
    ResolvedModelMerge,
)

__all__ = ["MergeOutcome", "MergeRequest", "Merger", "ResolvedMerge"]

log = logging.getLogger(__name__)

MODEL_KINDS = (
    common_pb2.ARTIFACT_KIND_BASE_MODEL,
    common_pb2.ARTIFACT_KIND_MERGED_MODEL,
)
# Progress events while merging: about this many, however many tensors.
PROGRESS_EVENTS = 20
# A merge's temp directory untouched this long belongs to a merge that died.
STALE_STAGING_S = 6 * 3600


def base_quantization(adapter: Any) -> str:
    """The adapter's recorded QLoRA base quantisation ("" for a plain LoRA)."""
    value = str(from_struct(adapter.metadata).get("base_quantization") or "")
    value = "" if value.lower() in ("", "none") else value.lower()
    if value and value not in BASE_QUANTIZATIONS:
        raise FailedPrecondition(
            f"adapter {adapter.id} records base_quantization={value!r}; the merger "
            f"knows {', '.join(BASE_QUANTIZATIONS)} (or none)",
            field="adapter_id",
        )
    return value


def check_lineage(adapter: Any, base: Any) -> None:
    """The shared adapter/base rule (services/common/adapter_base.py)."""
    check_adapter_base(
        adapter,
        base,
        field="base_model_id",
        remedy="leave base_model_id empty to use the adapter's own base",
    )


class Merger:
    """The merger's domain: turns MergeRequests into registered merged models."""

    def __init__(
        self, config: Config, registry: Any, store: JobStore, *, start: bool = True
    ) -> None:
        self._config = config
        self._registry = registry
        # For the jobs' calls: a registry restart must not fail a merge.
        self._patient_registry = Patient(
            registry, "registry", Patience(config.dependency_patience_s)
        )
        for stale in sweep_stale_staging(config.staging_dir, STALE_STAGING_S):
            log.warning("removed %s, left behind by a merge that died", stale)
        self.engine = DurableJobEngine(
            "merge",
            self._run,
            store,
            worker_id=config.worker_id_of("merger"),
            workers=config.job_workers,
            queue_size=config.job_queue_size,
            history=config.job_history,
            retention_s=config.job_retention_s,
            lease_s=config.lease_of("merger"),
            codec=MERGE_JOB_CODEC,
            start=start,
        )

    def start(
        self, request: MergeRequest, *, request_id: str = "", digest: str = ""
    ) -> Job:
        """Checks the merge, then queues it; a used `request_id` returns its job."""
        if request_id:
            existing = self.engine.find(request_id, digest)
            if existing is not None:
                return existing
        if request.recipe:
            request = from_recipe(
                request, self._config.readable_roots(), self._registry, self._get
            )
        request.check()
        ids = {"request_id": request_id, "digest": digest}
        if request.merges_models:
            return self.engine.submit(resolve_model_merge(request, self._get), **ids)
        adapter = self._get(request.adapter_id)
        if adapter.kind != common_pb2.ARTIFACT_KIND_ADAPTER:
            raise FailedPrecondition(
                f"{request.adapter_id} is a {_kind(adapter)}, not an adapter; pass an "
                "ADAPTER id as adapter_id",
                field="adapter_id",
            )
        base_id = request.base_model_id or from_struct(adapter.metadata).get(
            "base_model_id", ""
        )
        if not base_id:
            raise InvalidArgument(
                f"adapter {adapter.id} records no base model; pass base_model_id",
                field="base_model_id",
            )
        base = self._get(base_id)
        if base.kind not in MODEL_KINDS:
            raise FailedPrecondition(
                f"{base_id} is a {_kind(base)}, not a model; pass a base or merged "
                "model id as base_model_id",
                field="base_model_id",
            )
        check_lineage(adapter, base)
        quantization = base_quantization(adapter)
        plan = _plan(adapter, base)
        check_tokenizer(request.gate, _path(base), f"base {base.name}:{base.version}")
        if plan.classifier is not None and request.exports:
            formats = ", ".join(e.format for e in request.exports)
            raise FailedPrecondition(
                f"adapter {adapter.id} is a classification adapter: it merges into "
                f"a sequence classifier ({plan.classifier.architecture}), and "
                f"quantized exports ({formats}) are measured by perplexity, which "
                "needs a causal LM head; leave exports empty",
                field="exports",
            )
        check_exports(list(request.exports), _path(base))
        return self.engine.submit(
            ResolvedMerge(request, adapter, base, plan, quantization), **ids
        )

    def _get(self, artifact_id: str) -> Any:
        return self._registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=artifact_id)
        ).artifact

    def _run(self, ctx: JobContext, job: Any) -> MergeOutcome:
        done = self._registered_merge(ctx.job.id)
        if done is not None:
            # An earlier attempt registered the merged model, then its merger
            # died before marking the job done: finish with that model.
            ctx.report(
                stage="done",
                progress=1.0,
                message=f"merged model {done.name}:{done.version} ({done.id}) was "
                "registered by an earlier attempt",
            )
            return MergeOutcome.registered(done)
        if isinstance(job, ResolvedModelMerge):
            return run_model_merge(ctx, job, self._config, self._patient_registry)
        adapter, base, request = job.adapter, job.base, job.request
        # Planned again from the headers: the stored job keeps no plan.
        plan = job.plan or _plan(adapter, base)
        ctx.report(
            stage="merge",
            progress=0.02,
            message=f"merging {adapter.name}:{adapter.version} into "
            f"{base.name}:{base.version} as {request.output_dtype}",
        )
        final = self._config.staging_dir / f"merge-{ctx.job.id}"

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

        try:
            ctx.check_cancelled()
            with staged_directory(final) as tmp:
                stats = execute_merge(
                    plan,
                    tmp,
                    output_dtype=request.output_dtype,
                    adapter_digest=adapter.digest,
                    base_digest=base.digest,
                    on_tensor=on_tensor,
                    max_shard_size=request.shard_size,
                )
                checked = check_and_export(
                    ctx,
                    tmp,
                    stats,
                    {
                        "kind": "lora",
                        "merged": str(tmp),
                        "base": str(_path(base)),
                        "adapter": str(_path(adapter)),
                        "dtype": request.output_dtype,
                        "tolerance": request.gate.tolerance(request.output_dtype),
                        "base_quantization": job.base_quantization,
                        **_classifier_gate(plan),
                    },
                    request.gate,
                    list(request.exports),
                )
                if plan.classifier is not None and plan.classifier.note():
                    checked.notes.append(plan.classifier.note())
            ctx.check_cancelled()  # last point before the registry holds a result
            metrics = {
                "tensors_merged": float(stats.tensors_merged),
                "tensors_total": float(stats.tensors_total),
                "max_abs_delta": stats.max_abs_delta,
                "merge_seconds": stats.seconds,
            }
            ctx.report(
                stage="register",
                progress=0.95,
                message="registering merged model",
                metrics=metrics,
            )
            response = self._patient_registry.RegisterArtifact(
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
                            **self._metadata(ctx, job, stats),
                            **(plan.classifier.facts() if plan.classifier else {}),
                            **evidence(checked),
                        }
                    ),
                    parents=[
                        common_pb2.ParentRef(
                            artifact_id=adapter.id, relation="adapter"
                        ),
                        common_pb2.ParentRef(
                            artifact_id=base.id, relation="base_model"
                        ),
                    ],
                )
            )
        finally:
            shutil.rmtree(final, ignore_errors=True)
        merged = response.artifact
        ctx.report(
            stage="done",
            progress=1.0,
            message=f"merged model {merged.name}:{merged.version} ({merged.id})",
        )
        return MergeOutcome.of(merged.id, stats, checked)

    def _registered_merge(self, job_id: str) -> Any | None:
        """The merged model an earlier attempt of `job_id` registered, if any."""
        return registered_by_job(
            self._patient_registry,
            common_pb2.ARTIFACT_KIND_MERGED_MODEL,
            "merge_job_id",
            job_id,
        )

    @staticmethod
    def _metadata(ctx: JobContext, job: ResolvedMerge, stats: Any) -> dict[str, Any]:
        """Provenance a reader needs to reproduce or audit the merge."""
        return {
            **stats.provenance,
            "adapter_id": job.adapter.id,
            "adapter_name": job.adapter.name,
            "base_model_id": job.base.id,
            "base_model_digest": job.base.digest,
            "base_model_name": job.base.name,
            "output_dtype": job.request.output_dtype,
            "tensors_merged": stats.tensors_merged,
            "tensors_total": stats.tensors_total,
            "tensors_replaced": stats.tensors_replaced,
            "base_quantization": job.base_quantization,
            "shards": stats.written.shards,
            "merge_job_id": ctx.job.id,
        }


def evidence(checked: Checked) -> dict[str, Any]:
    """The gate's numbers, notes and exports, as registered metadata."""
    facts: dict[str, Any] = {"gate": checked.gate}
    if checked.notes:
        facts["notes"] = checked.notes
    if checked.exports:
        facts["quantized_exports"] = [r.summary() for r in checked.exports]
    return facts


def _plan(adapter: Any, base: Any) -> MergePlan:
    """The merge of `adapter` into `base`, headers only; a classification
    adapter's merge writes a sequence classifier."""
    classifier = plan_classifier(
        _path(adapter), _path(base), from_struct(adapter.metadata)
    )
    return plan_merge(_path(adapter), _path(base), classifier)


def _classifier_gate(plan: MergePlan) -> dict[str, Any]:
    """What the gate needs to compare a classifier's logits (nothing for an LM)."""
    return {"classifier": plan.classifier.gate_spec()} if plan.classifier else {}


def _kind(artifact: Any) -> str:
    return common_pb2.ArtifactKind.Name(artifact.kind)


def _path(artifact: Any) -> Path:
    if not artifact.local_path:
        raise FailedPrecondition(
            f"artifact {artifact.id} has no local_path on the artifact volume"
        )
    return Path(artifact.local_path)
