"""One attempt at a workflow: the steps not yet recorded as done, in order.

A step records its sub-job id before following it and its outcome before the
next step starts (`ctx.record`, persisted by the durable job engine), so the
next attempt (after a take-over or ResumeWorkflow) skips completed steps,
re-attaches to a running sub-job by id, and starts a step's sub-job with the
same request id it used before: no step ever runs twice.
"""

from __future__ import annotations

import logging
from typing import Any

from lorafleet.v1 import common_pb2, merger_pb2, registry_pb2, validator_pb2
from services.common.errors import (
    Cancelled,
    FailedPrecondition,
    LorafleetError,
    NotFound,
)
from services.common.jobs import JobContext
from services.gateway.admission import train_request
from services.gateway.deploy import deploy_once
from services.gateway.records import (
    WorkflowOutcome,
    WorkflowSpec,
    decode_outcome,
    message_to_json,
)
from services.gateway.steps import (
    CANCELLED,
    FAILED,
    PROGRESS,
    RUNNING,
    STEPS,
    SUCCEEDED,
)
from services.gateway.subjobs import (
    KINDS,
    TERMINAL,
    Patience,
    SubJobs,
    call,
    outcome_of,
)
from services.gateway.workflow_rollout import roll_out, rollout_settings_of

log = logging.getLogger(__name__)

VALIDATED_ALIAS = "validated"


class WorkflowRun:
    """One attempt at a workflow: runs the steps not yet recorded as done."""

    def __init__(
        self,
        ctx: JobContext,
        spec: WorkflowSpec,
        clients: dict[str, Any],
        subjobs: SubJobs,
        rollouts: Any = None,
    ):
        self._ctx = ctx
        self._spec = spec
        self._clients = clients
        self._subjobs = subjobs
        self._rollouts = rollouts  # services.gateway.rollouts.service.Rollouts
        details = ctx.details
        self.steps: dict[str, dict[str, Any]] = {
            k: dict(v) for k, v in details.get("steps", {}).items()
        }
        self.outcome: dict[str, Any] = dict(
            details.get("outcome") or {"dataset_id": spec.dataset.id}
        )

    @property
    def patience(self) -> Patience:
        return self._subjobs.patience

    def execute(self) -> WorkflowOutcome:
        names = [
            s for s in STEPS if not (s == "deploy" and self._spec.request.skip_deploy)
        ]
        for name in names:
            rec = self.steps.setdefault(name, {"state": "QUEUED"})
            if rec.get("state") == SUCCEEDED:
                continue
            self._ctx.check_cancelled()
            self._begin(name, rec)
            try:
                getattr(self, f"_{name}")(rec)
            except Cancelled as exc:
                if self._ctx.cancel_requested:
                    self._end(name, rec, CANCELLED, exc.message)
                # Else this gateway is stopping or lost the workflow: the step
                # stays RUNNING for whoever continues it.
                raise
            except LorafleetError as exc:
                self._end(name, rec, FAILED, exc.message)
                raise
            self._end(name, rec, SUCCEEDED, rec.get("message", "done"))
        return decode_outcome(self.outcome)

    # --- recording ----------------------------------------------------------------
    def _save(self) -> None:
        self._ctx.record(steps=self.steps, outcome=self.outcome)

    def _begin(self, name: str, rec: dict[str, Any]) -> None:
        if rec.get("state") != RUNNING:
            rec["state"] = RUNNING
            self._save()

    def _end(self, name: str, rec: dict[str, Any], state: str, message: str) -> None:
        rec["state"], rec["message"] = state, message
        rec.pop("retry", None)
        try:
            self._save()
        except LorafleetError:
            if state == SUCCEEDED:
                raise
            log.warning("workflow %s: recording the %s step failed", self._id, name)

    @property
    def _id(self) -> str:
        return self._ctx.job.id

    def _report(self, step: str, fraction: float, message: str, **kw: Any) -> None:
        low, high = PROGRESS[step]
        self._ctx.report(
            stage=step, progress=low + (high - low) * fraction, message=message, **kw
        )

    # --- sub-jobs -----------------------------------------------------------------
    def _sub_job(self, step: str, rec: dict[str, Any], start) -> Any:
        """Starts the step's sub-job (once) and follows it to its end."""
        kind = KINDS[step]
        job_id = rec.get("job_id", "")
        if job_id and rec.get("retry") and self._ended_badly(kind, job_id):
            log.info(
                "workflow %s: %s job %s did not succeed; starting the step again",
                self._id,
                step,
                job_id,
            )
            rec["try"] = rec.get("try", 0) + 1
            job_id = ""
        if not job_id:
            request_id = self._spec.sub_request_id(step, rec.get("try", 0))
            job = call(
                self.patience,
                kind.service,
                f"starting the {step} step of workflow {self._id}",
                lambda: start(request_id),
            )
            job_id = job.status.job_id
            rec.update(job_id=job_id, cursor=0)
            rec.pop("retry", None)
            self._save()
            log.info("workflow %s: %s job %s started", self._id, step, job_id)
        else:
            log.info(
                "workflow %s: re-attaching to %s job %s after event %d",
                self._id,
                step,
                job_id,
                rec.get("cursor", 0),
            )

        def on_event(update: Any) -> None:
            rec["cursor"] = update.event.sequence
            event = update.event
            low, high = PROGRESS[step]
            self._ctx.report(
                stage=step,
                progress=low + (high - low) * event.progress,
                message=f"{step}: {event.message}",
                metrics=dict(event.metrics),
                step=event.step,
                total_steps=event.total_steps,
                record={"steps": self.steps},
            )

        final = self._subjobs.follow(
            kind,
            job_id,
            after=rec.get("cursor", 0),
            on_event=on_event,
            cancel_requested=lambda: self._ctx.cancel_requested,
            halted=lambda: self._ctx.cancelled,
        )
        return outcome_of(kind, final, cancelled_here=self._ctx.cancel_requested)

    def _ended_badly(self, kind: Any, job_id: str) -> bool:
        """Whether a sub-job failed, was cancelled or is lost (a resume then
        starts the step anew; one still running or done is re-attached)."""
        try:
            state = self._subjobs.get(kind, job_id).status.state
        except NotFound:
            return True
        return state in TERMINAL and state != common_pb2.JOB_STATE_SUCCEEDED

    # --- the steps ----------------------------------------------------------------
    def _register_dataset(self, rec: dict[str, Any]) -> None:
        rec["output"] = self._spec.dataset.id  # done at RunWorkflow

    def _train(self, rec: dict[str, Any]) -> None:
        trainer = self._clients["trainer"]
        train = self._sub_job(
            "train",
            rec,
            lambda rid: (
                trainer.StartTrainJob(
                    _with_request_id(train_request(self._spec, 0), rid)
                ).job
            ),
        )
        effective = train.effective_config
        self.outcome.update(
            adapter_id=train.result.adapter_id,
            train_metrics=dict(train.result.metrics),
            eval_fraction=effective.eval_fraction,
            seed=effective.seed,
        )
        rec["output"] = train.result.adapter_id
        rec["message"] = f"adapter {train.result.adapter_id}"

    def _merge(self, rec: dict[str, Any]) -> None:
        merger, spec = self._clients["merger"], self._spec
        merge = self._sub_job(
            "merge",
            rec,
            lambda rid: (
                merger.StartMergeJob(
                    merger_pb2.StartMergeJobRequest(
                        adapter_id=self.outcome["adapter_id"],
                        base_model_id=spec.base.id,
                        output_name=spec.name,
                        tags={"workflow": spec.name},
                        request_id=rid,
                    )
                ).job
            ),
        )
        self.outcome["merged_model_id"] = merge.result.merged_model_id
        rec["output"] = merge.result.merged_model_id
        rec["message"] = f"merged model {merge.result.merged_model_id}"

    def _validate(self, rec: dict[str, Any]) -> None:
        validator, spec = self._clients["validator"], self._spec
        request = spec.request
        validation = self._sub_job(
            "validate",
            rec,
            lambda rid: (
                validator.StartValidationJob(
                    validator_pb2.StartValidationJobRequest(
                        model_id=self.outcome["merged_model_id"],
                        baseline_model_id=spec.base.id,
                        dataset_id=spec.dataset.id,
                        gates=request.gates,
                        max_examples=request.validation_examples,
                        max_new_tokens=request.validation_max_new_tokens,
                        eval_fraction=self.outcome.get("eval_fraction", 0.0),
                        seed=self.outcome.get("seed", 0),
                        request_id=rid,
                        mode=request.validation_mode,
                        # Compared with what the deployment serves now, if
                        # anything: the regression gates need it.
                        deployment=(
                            spec.deployment
                            if not request.skip_deploy
                            and self._deployed(spec.deployment)
                            else ""
                        ),
                    )
                ).job
            ),
        )
        self.outcome["report"] = message_to_json(validation.report)
        rec["output"] = validation.report.id
        rec["message"] = f"report {validation.report.id}"

    def _gate(self, rec: dict[str, Any]) -> None:
        report = decode_outcome(self.outcome).report
        request = self._spec.request
        if not report.passed and request.force:
            failed = "; ".join(g.name for g in report.gates if not g.passed)
            rec["message"] = (
                f"FORCED past failed gates ({failed}): {request.force_reason}"
            )
            self._report("gate", 1.0, rec["message"])
            return
        if not report.passed:
            failed = "; ".join(g.message for g in report.gates if not g.passed)
            raise FailedPrecondition(
                f"validation gates failed ({failed}); merged model "
                f"{self.outcome['merged_model_id']} stays registered without the "
                f"'{VALIDATED_ALIAS}' alias and deployment "
                f"{self._spec.deployment!r} is unchanged"
            )
        rec["message"] = "every gate passed"
        self._report("gate", 1.0, "every validation gate passed")

    def _alias(self, rec: dict[str, Any]) -> None:
        merged, report = self.outcome["merged_model_id"], self.outcome["report"]
        call(
            self.patience,
            "registry",
            f"marking {merged} '{VALIDATED_ALIAS}'",
            lambda: self._clients["registry"].SetAlias(
                registry_pb2.SetAliasRequest(
                    artifact_id=merged,
                    alias=VALIDATED_ALIAS,
                    reason=self._forced(
                        f"passed validation report {report.get('id', '')}"
                    ),
                )
            ),
        )
        rec["output"] = VALIDATED_ALIAS
        rec["message"] = f"{merged} marked '{VALIDATED_ALIAS}'"
        self._report("alias", 1.0, rec["message"])

    def _deploy(self, rec: dict[str, Any]) -> None:
        merged, name = self.outcome["merged_model_id"], self._spec.deployment
        settings = rollout_settings_of(self._spec.request)
        if settings is not None and self._rollouts is not None:
            if rec.get("job_id") or self._deployed(name):
                return self._deploy_by_rollout(rec, merged, name, settings)
        deployment = deploy_once(
            self.patience,
            self._clients["registry"],
            self._clients["inference"],
            name,
            merged,
            reason=self._forced(f"workflow {self._id}"),
        )
        self.outcome["deployment"] = message_to_json(deployment)
        rec["output"] = str(deployment.revision)
        rec["message"] = (
            f"deployment {name!r} now serves {merged} (revision {deployment.revision})"
        )
        self._report("deploy", 1.0, rec["message"])

    def _was_forced(self) -> bool:
        """Whether this workflow deploys a version whose report failed."""
        report = self.outcome.get("report") or {}
        return bool(self._spec.request.force) and not report.get("passed", False)

    def _forced(self, reason: str) -> str:
        """`reason` as audited: a forced deploy says so, with its reason."""
        if not self._was_forced():
            return reason
        report = (self.outcome.get("report") or {}).get("id", "")
        return (
            f"{reason} [forced past failed validation report {report}: "
            f"{self._spec.request.force_reason}]"
        )

    def _deployed(self, name: str) -> bool:
        """Whether the deployment exists (a rollout needs a version to roll
        out against; a new deployment is created by a plain deploy)."""

        def read() -> bool:
            try:
                self._clients["registry"].GetDeployment(
                    registry_pb2.GetDeploymentRequest(name=name)
                )
            except NotFound:
                return False
            return True

        return call(self.patience, "registry", f"reading deployment {name!r}", read)

    def _deploy_by_rollout(
        self, rec: dict[str, Any], merged: str, name: str, settings: Any
    ) -> None:
        self._report(
            "deploy", 0.0, f"rolling {merged} out on {name!r} ({settings.strategy})"
        )
        request = self._spec.request
        outcome = roll_out(
            self._ctx,
            self._rollouts,
            name,
            merged,
            settings,
            rec,
            self._save,
            force_reason=request.force_reason if self._was_forced() else "",
        )
        deployment = call(
            self.patience,
            "registry",
            f"reading deployment {name!r}",
            lambda: self._clients["registry"].GetDeployment(
                registry_pb2.GetDeploymentRequest(name=name)
            ),
        ).deployment
        self.outcome["deployment"] = message_to_json(deployment)
        rec["output"] = str(deployment.revision)
        rec["message"] = f"rollout {rec['job_id']} promoted {merged}: {outcome.reason}"
        self._report("deploy", 1.0, rec["message"])


def _with_request_id(request: Any, request_id: str) -> Any:
    request.request_id = request_id
    return request
