"""Validation jobs: resolve the candidate, score it and its baseline, gate, record."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common import datasets
from services.common.config import Config
from services.common.datasets import dataset_file_of
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.jobqueue import Codec, DurableJobEngine, JobStore
from services.common.jobs import Job, JobContext
from services.common.modeling import (
    check_adapter_base,
    load_causal_lm,
    load_tokenizer,
    require_safetensors_adapter,
    resolve_device,
)
from services.validator.evaluation import (
    LATENCY_TOKENS,
    ModelScores,
    latency_prompts,
    score_model,
    time_alternately,
)
from services.validator.gates import GateResult, Gates, evaluate_gates

MODEL_KINDS = (
    common_pb2.ARTIFACT_KIND_BASE_MODEL,
    common_pb2.ARTIFACT_KIND_MERGED_MODEL,
)


@dataclass
class ValidationSpec:
    model_id: str
    adapter_id: str = ""
    baseline_model_id: str = ""
    dataset_id: str = ""
    gates: Gates = field(default_factory=Gates)
    max_examples: int = 32
    max_new_tokens: int = 64
    eval_fraction: float = 0.1
    seed: int = 42


@dataclass
class ResolvedValidation:
    spec: ValidationSpec
    model: Any
    adapter: Any | None
    baseline: Any | None
    dataset: Any


@dataclass
class ValidationOutcome:
    report_id: str
    candidate_id: str
    candidate: ModelScores
    baseline: ModelScores | None
    score: float
    score_metric: str
    passed: bool
    gates: list[GateResult]
    create_time: float


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
        """Checks the request, then queues it; a used `request_id` returns its job."""
        if request_id:
            existing = self.engine.find(request_id, digest)
            if existing is not None:
                return existing
        if not spec.model_id:
            raise InvalidArgument(
                "model_id is required: the registry id of the model to validate",
                field="model_id",
            )
        if not spec.dataset_id:
            raise InvalidArgument(
                "dataset_id is required: validation scores the "
                "held-out split of a dataset",
                field="dataset_id",
            )
        if not 1 <= spec.max_examples <= 10000:
            raise InvalidArgument(
                "max_examples must be in [1, 10000]", field="max_examples"
            )
        if not 1 <= spec.max_new_tokens <= 4096:
            raise InvalidArgument(
                "max_new_tokens must be in [1, 4096]", field="max_new_tokens"
            )
        spec.gates.check()
        model = self._model(spec.model_id)
        adapter = None
        if spec.adapter_id:
            adapter = self._get(spec.adapter_id)
            if adapter.kind != common_pb2.ARTIFACT_KIND_ADAPTER:
                raise FailedPrecondition(f"{spec.adapter_id} is not an adapter")
            check_adapter_base(adapter, model)
        baseline = (
            self._model(spec.baseline_model_id) if spec.baseline_model_id else None
        )
        dataset = self._get(spec.dataset_id)
        if dataset.kind != common_pb2.ARTIFACT_KIND_DATASET:
            raise FailedPrecondition(f"{spec.dataset_id} is not a dataset")
        datasets.load_dataset(dataset_file_of(dataset))  # reject malformed data now
        return self.engine.submit(
            ResolvedValidation(spec, model, adapter, baseline, dataset),
            request_id=request_id,
            digest=digest,
        )

    def _get(self, artifact_id: str) -> Any:
        return self._registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=artifact_id)
        ).artifact

    def _model(self, artifact_id: str) -> Any:
        artifact = self._get(artifact_id)
        if artifact.kind not in MODEL_KINDS:
            raise FailedPrecondition(
                f"{artifact_id} is a {common_pb2.ArtifactKind.Name(artifact.kind)}; "
                "validate a base or merged model (pass adapters as adapter_id)"
            )
        return artifact

    def _run(self, ctx: JobContext, job: ResolvedValidation) -> ValidationOutcome:
        if "outcome" in ctx.details:
            # An earlier attempt recorded its report, then its validator died
            # before marking the job done: the same outcome, no second report.
            ctx.report(
                stage="done", progress=1.0, message="recorded by an earlier attempt"
            )
            return self._codec.decode_result(ctx.details["outcome"])
        spec = job.spec
        task, rows = datasets.load_dataset(dataset_file_of(job.dataset))
        # The trainer's own split (stratified for classification), so the
        # held-out rows were never trained on.
        _, held_out = datasets.split_for_task(rows, task, spec.eval_fraction, spec.seed)
        examples = [datasets.to_example(r, task) for r in held_out[: spec.max_examples]]
        candidate_id = job.adapter.id if job.adapter else job.model.id
        ctx.report(
            stage="candidate",
            progress=0.05,
            message=f"scoring {candidate_id} on {len(examples)} held-out examples",
        )
        loaded: list[tuple[ModelScores, Any, Any]] = []
        try:
            candidate = self._score(
                candidate_id, job.model, job.adapter, examples, spec, loaded
            )
            ctx.check_cancelled()
            baseline = None
            if job.baseline is not None:
                ctx.report(
                    stage="baseline",
                    progress=0.5,
                    message=f"scoring baseline {job.baseline.id}",
                    metrics=_metrics("candidate", candidate),
                )
                baseline = self._score(
                    job.baseline.id, job.baseline, None, examples, spec, loaded
                )
                ctx.check_cancelled()
            ctx.report(
                stage="timing",
                progress=0.8,
                message=f"timing {len(loaded)} model(s) in turn on a fixed workload",
            )
            self._time(loaded, examples)
        finally:
            loaded.clear()
            gc.collect()
        score, metric, gates = evaluate_gates(spec.gates, candidate, baseline)
        passed = all(g.passed for g in gates)
        outcome = ValidationOutcome(
            report_id="",
            candidate_id=candidate_id,
            candidate=candidate,
            baseline=baseline,
            score=score,
            score_metric=metric,
            passed=passed,
            gates=gates,
            create_time=time.time(),
        )
        ctx.report(
            stage="record",
            progress=0.95,
            message="recording report",
            metrics={
                "score": score,
                **_metrics("candidate", candidate),
                **(_metrics("baseline", baseline) if baseline else {}),
            },
        )
        outcome.report_id = self._recorder(job, outcome)
        ctx.record(outcome=self._codec.encode_result(outcome))
        failed = [g.message for g in gates if not g.passed]
        ctx.report(
            stage="done",
            progress=1.0,
            message="passed all gates" if passed else "failed: " + "; ".join(failed),
        )
        return outcome

    def _score(
        self,
        model_id: str,
        model_artifact: Any,
        adapter: Any | None,
        examples: list[datasets.Example],
        spec: ValidationSpec,
        loaded: list[tuple[ModelScores, Any, Any]],
    ) -> ModelScores:
        """Loads and scores one model; a model that loads stays in `loaded`
        (scores, model, tokenizer) until every model is timed."""
        path = Path(model_artifact.local_path)
        try:
            tokenizer = load_tokenizer(path)
            model = load_causal_lm(path, self._device)
            if adapter is not None:
                from peft import PeftModel

                require_safetensors_adapter(Path(adapter.local_path))
                model = PeftModel.from_pretrained(model, adapter.local_path)
            model.eval()
        except FailedPrecondition:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken model is a failed gate
            return ModelScores(
                model_id=model_id,
                loads=False,
                samples=[("", f"load failed: {type(exc).__name__}: {exc}", "")],
            )
        scores = score_model(
            model_id,
            model,
            tokenizer,
            examples,
            max_new_tokens=spec.max_new_tokens,
            max_length=2048,
        )
        loaded.append((scores, model, tokenizer))
        return scores

    @staticmethod
    def _time(
        loaded: list[tuple[ModelScores, Any, Any]],
        examples: list[datasets.Example],
    ) -> None:
        """Times the loaded models in turn on the same fixed workload (so a
        speed ratio is not skewed by when each ran) and records each one's
        ms per token."""
        if not loaded:
            return
        ms = time_alternately(
            [(m, t, latency_prompts(t, examples)) for _, m, t in loaded]
        )
        for (scores, _, _), per_token in zip(loaded, ms, strict=True):
            scores.latency_ms_per_token = per_token
            scores.latency_ms_per_request = per_token * LATENCY_TOKENS


def _metrics(prefix: str, scores: ModelScores) -> dict[str, float]:
    return {
        f"{prefix}_perplexity": scores.perplexity,
        f"{prefix}_exact_match": scores.exact_match,
        f"{prefix}_ms_per_token": scores.latency_ms_per_token,
    }
