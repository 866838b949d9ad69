"""Validation jobs: resolve what is compared, load the models, run the
suites on each, gate, record."""

from __future__ import annotations

import gc
import time
from typing import Any

from lorafleet.v1 import common_pb2
from services.common import datasets
from services.common.adapter_base import check_adapter_base
from services.common.config import Config
from services.common.datasets import dataset_file_of
from services.common.errors import FailedPrecondition
from services.common.jobqueue import Codec, DurableJobEngine, JobStore
from services.common.jobs import Job, JobContext
from services.common.modeling import (
    classification_labels,
    resolve_device,
)
from services.validator.assessment import (
    Assessment,
    compare,
    not_loaded,
    run_suites,
)
from services.validator.deploy_gates import deployment_gates
from services.validator.gates import evaluate_gates
from services.validator.legacy import legacy_scores, primary_metric_of
from services.validator.probes import load_probes
from services.validator.report import Verdict, fold_suites
from services.validator.resolve import Resolver, Version
from services.validator.spec import (
    ResolvedValidation,
    ValidationOutcome,
    ValidationSpec,
    check_spec,
)
from services.validator.subjects import load_subject
from services.validator.suites.base import MODES, Subject, SuiteContext

# The legacy gates that read the task suite's measurements.
TASK_GATES = frozenset(
    {"finite_perplexity", "min_score", "max_perplexity_ratio", "min_score_delta"}
)

__all__ = ["ResolvedValidation", "ValidationOutcome", "ValidationSpec", "Validator"]


class Validator:
    """The validator's domain: scores candidates and records reports."""

    def __init__(
        self,
        config: Config,
        registry: Any,
        recorder: Any,
        store: JobStore,
        codec: Codec,
        *,
        start: bool = True,
    ) -> None:
        self._config = config
        self._registry = registry
        # Turns a finished outcome into a stored report (protobuf lives in server.py).
        self._recorder = recorder
        self._codec = codec
        self._device = resolve_device(config.device)
        self._resolver = Resolver(registry, config.staging_dir)
        self.engine = DurableJobEngine(
            "validate",
            self._run,
            store,
            worker_id=config.worker_id_of("validator"),
            workers=config.job_workers,
            queue_size=config.job_queue_size,
            history=config.job_history,
            retention_s=config.job_retention_s,
            lease_s=config.lease_of("validator"),
            codec=codec,
            start=start,
        )

    def start(
        self, spec: ValidationSpec, *, request_id: str = "", digest: str = ""
    ) -> Job:
        """Checks the request and resolves what it compares, then queues it;
        a used `request_id` returns its job. Bad input creates no job."""
        if request_id:
            existing = self.engine.find(request_id, digest)
            if existing is not None:
                return existing
        check_spec(spec)
        resolver = self._resolver
        model = resolver.model(spec.model_id, "model_id")
        adapter = None
        if spec.adapter_id:
            adapter = resolver.get(spec.adapter_id, "adapter_id")
            if adapter.kind != common_pb2.ARTIFACT_KIND_ADAPTER:
                raise FailedPrecondition(
                    f"{spec.adapter_id} is not an adapter", field="adapter_id"
                )
            check_adapter_base(adapter, model)
        # A pairing no loader can serve (a causal adapter on a merged
        # classifier ...) is refused now, not found by the job.
        classification_labels(model, adapter)
        base = resolver.base_of(Version(model, adapter))
        baseline = None
        if spec.baseline_model_id:
            baseline = resolver.model(spec.baseline_model_id, "baseline_model_id")
            theirs = resolver.base_of(Version(baseline))
            if theirs.id != base.id:
                raise FailedPrecondition(
                    f"baseline {baseline.name}:{baseline.version} is built on "
                    f"{theirs.name}:{theirs.version} but the candidate on "
                    f"{base.name}:{base.version}: their scores would not compare; "
                    "pass a baseline made from the candidate's base (or the base "
                    "itself)",
                    field="baseline_model_id",
                )
        production = resolver.production(spec.deployment) if spec.deployment else None
        dataset = resolver.get(spec.dataset_id, "dataset_id")
        if dataset.kind != common_pb2.ARTIFACT_KIND_DATASET:
            raise FailedPrecondition(
                f"{spec.dataset_id} is not a dataset", field="dataset_id"
            )
        datasets.load_dataset(dataset_file_of(dataset))  # reject malformed data now
        probe_set = None
        if "safety" in spec.suite_names():
            probe_set = resolver.probe_set(spec.safety_probe_set_id)
            load_probes(dataset_file_of(probe_set))  # a malformed set fails now
        elif spec.safety_probe_set_id:
            resolver.probe_set(spec.safety_probe_set_id)
        return self.engine.submit(
            ResolvedValidation(
                spec,
                model,
                adapter,
                baseline,
                dataset,
                base=base,
                production_model=production.model if production else None,
                production_adapter=production.adapter if production else None,
                probe_set=probe_set,
            ),
            request_id=request_id,
            digest=digest,
        )

    def _run(self, ctx: JobContext, job: ResolvedValidation) -> ValidationOutcome:
        if "outcome" in ctx.details:
            # An earlier attempt recorded its report, then its validator died
            # before marking the job done: the same outcome, no second report.
            ctx.report(
                stage="done", progress=1.0, message="recorded by an earlier attempt"
            )
            return self._codec.decode_result(ctx.details["outcome"])
        spec = job.spec
        suite_ctx = self._context(job)
        candidate_id = job.adapter.id if job.adapter else job.model.id
        plan = self._plan(job)
        ctx.report(
            stage="load",
            progress=0.02,
            message=f"{spec.mode}: loading {len(plan)} model(s); "
            f"{len(suite_ctx.examples)} held-out examples",
        )
        subjects: list[Subject] = []
        broken: dict[str, str] = {}
        try:
            for label, model, adapter in plan:
                subject, error = load_subject(label, model, adapter, self._device)
                if subject is None:
                    broken[label] = error
                else:
                    subjects.append(subject)
                ctx.check_cancelled()
            by_label = {s.label: s for s in subjects}
            suite_ctx.candidate = by_label.get("candidate") or Subject(
                "candidate", candidate_id, None, None
            )
            suite_ctx.base = by_label.get("base") or by_label.get("candidate")
            suite_ctx.production = by_label.get("production")
            done = [0]
            steps = max(1, len(spec.suite_names()) * (len(subjects) + 1))

            def progress(message: str) -> None:
                done[0] += 1
                ctx.check_cancelled()
                ctx.report(
                    stage="suites",
                    progress=0.05 + 0.85 * min(1.0, done[0] / steps),
                    message=message,
                )

            assessment = (
                run_suites(
                    subjects,
                    suite_ctx,
                    spec.suite_names(),
                    spec.weights,
                    spec.grades(),
                    progress,
                )
                if "candidate" in by_label
                else None
            )
        finally:
            subjects.clear()
            gc.collect()
        outcome = self._outcome(job, suite_ctx, assessment, broken, candidate_id)
        ctx.report(
            stage="record",
            progress=0.95,
            message="recording report",
            metrics={"overall": outcome.overall, "score": outcome.score},
        )
        outcome.report_id = self._recorder(job, outcome)
        ctx.record(outcome=self._codec.encode_result(outcome))
        failed = [g.message for g in outcome.gates if not g.passed]
        ctx.report(
            stage="done",
            progress=1.0,
            message=(
                f"passed all gates (overall {outcome.overall:.3f}, {outcome.grade})"
                if outcome.passed
                else "failed: " + "; ".join(failed)
            ),
        )
        return outcome

    # --- the pieces of a run -------------------------------------------------------
    def _context(self, job: ResolvedValidation) -> SuiteContext:
        spec = job.spec
        sizes = MODES[spec.mode]
        task, rows = datasets.load_dataset(dataset_file_of(job.dataset))
        # The trainer's own split (stratified for classification), so the
        # held-out rows were never trained on.
        _, held_out = datasets.split_for_task(rows, task, spec.eval_fraction, spec.seed)
        wanted = spec.max_examples or sizes.task_examples
        probes = load_probes(dataset_file_of(job.probe_set)) if job.probe_set else []
        return SuiteContext(
            candidate=Subject("candidate", "", None, None),
            thresholds=dict(spec.thresholds),
            max_new_tokens=spec.max_new_tokens,
            seed=spec.seed,
            mode=spec.mode,
            task=task,
            examples=[datasets.to_example(r, task) for r in held_out[:wanted]],
            probes=probes,
        )

    @staticmethod
    def _plan(job: ResolvedValidation) -> list[tuple[str, Any, Any]]:
        """(label, model, adapter) of each distinct version to load."""
        plan = [("candidate", job.model, job.adapter)]
        seen = {_key(job.model, job.adapter)}
        others = [("base", job.base, None)]
        if job.production_model is not None:
            others.append(("production", job.production_model, job.production_adapter))
        if job.baseline is not None:
            others.append(("baseline", job.baseline, None))
        for label, model, adapter in others:
            if model is not None and _key(model, adapter) not in seen:
                seen.add(_key(model, adapter))
                plan.append((label, model, adapter))
        return plan

    def _outcome(
        self,
        job: ResolvedValidation,
        suite_ctx: SuiteContext,
        assessment: Assessment | None,
        broken: dict[str, str],
        candidate_id: str,
    ) -> ValidationOutcome:
        spec = job.spec
        if assessment is None:  # the candidate did not load
            verdict = fold_suites(
                [not_loaded("candidate", broken.get("candidate", "?"))],
                spec.weights,
                spec.grades(),
            )
            assessment = Assessment({"candidate": verdict})
        verdicts = assessment.verdicts
        mine = verdicts["candidate"]
        # A version identical to another one was loaded once: its verdict too.
        alias = {"base": "candidate", "production": "candidate", "baseline": "base"}
        ident = {
            "base": _key(job.base, None),
            "production": _key(job.production_model, job.production_adapter),
            "baseline": _key(job.baseline, None),
            "candidate": _key(job.model, job.adapter),
        }

        def verdict_of(label: str) -> Verdict | None:
            if label in verdicts:
                return verdicts[label]
            for other in (alias.get(label), "candidate", "base"):
                if other and ident.get(other) == ident[label] and other in verdicts:
                    return verdicts[other]
            return None

        candidate = legacy_scores(candidate_id, mine, suite_ctx, "candidate", broken)
        baseline = None
        if job.baseline is not None:
            theirs = verdict_of("baseline")
            baseline = legacy_scores(
                job.baseline.id, theirs or mine, suite_ctx, "baseline", broken
            )
        score, metric, gates = evaluate_gates(spec.gates, candidate, baseline)
        if "task" not in mine.suites:
            # Nothing scored the held-out split (a request without the task
            # suite): the gates on its perplexity and score have no evidence.
            gates = [g for g in gates if g.name not in TASK_GATES]
        production = (
            verdict_of("production") if job.production_model is not None else None
        )
        gates += deployment_gates(spec.gates, mine, production)
        task_metric = primary_metric_of(suite_ctx)
        comparisons = []
        for target, model, adapter in (
            ("base", job.base, None),
            ("production", job.production_model, job.production_adapter),
            ("baseline", job.baseline, None),
        ):
            if target == "baseline" and _key(model, None) == ident["base"]:
                continue  # the baseline is the base: compared once
            theirs = verdict_of(target) if model is not None else None
            if theirs is not None:
                comparisons.append(
                    compare(
                        target,
                        model.id,
                        adapter.id if adapter is not None else "",
                        mine,
                        theirs,
                        task_metric,
                    )
                )
        return ValidationOutcome(
            report_id="",
            candidate_id=candidate_id,
            candidate=candidate,
            baseline=baseline,
            score=score,
            score_metric=metric,
            passed=all(g.passed for g in gates),
            gates=gates,
            create_time=time.time(),
            mode=spec.mode,
            suites=list(mine.suites.values()),
            overall=mine.overall,
            grade=mine.grade,
            weights=mine.weights,
            recommendations=mine.recommendations,
            comparisons=comparisons,
            skipped=assessment.skipped,
            grade_bounds=list(spec.grades()),
        )


def _key(model: Any, adapter: Any) -> tuple[str, str] | None:
    if model is None:
        return None
    return (model.id, adapter.id if adapter is not None else "")
