"""The adapter lifecycle as one durable job: register dataset -> train -> merge
-> validate -> gate -> alias -> deploy, driving the other services only through
their gRPC contracts.

`Workflows` starts (see `admission`), cancels and resumes workflow jobs on the
gateway's durable job engine; each attempt runs the steps not yet done (`run`).
"""

from __future__ import annotations

import logging
from typing import Any

from services.common.config import Config
from services.common.errors import (
    FailedPrecondition,
    LorafleetError,
)
from services.common.jobqueue import DurableJobEngine, JobStore
from services.common.jobs import Job, JobContext, JobState
from services.gateway.admission import Admission
from services.gateway.records import (
    WORKFLOW_CODEC,
    WorkflowOutcome,
    WorkflowSpec,
)
from services.gateway.run import VALIDATED_ALIAS, WorkflowRun
from services.gateway.steps import (
    RUNNING,
    SUB_JOB_STEPS,
    for_resume,
)
from services.gateway.subjobs import (
    KINDS,
    Patience,
    SubJobs,
)

log = logging.getLogger(__name__)


class Workflows:
    """Starts, runs, cancels and resumes workflow jobs."""

    def __init__(
        self,
        config: Config,
        clients: dict[str, Any],
        store: JobStore,
        *,
        patience: Patience | None = None,
        start: bool = True,
        rollouts: Any = None,
    ) -> None:
        """`rollouts` (services.gateway.rollouts.service.Rollouts) runs the
        deploy step of workflows that ask for a rollout strategy."""
        self._config = config
        self._clients = clients
        self._rollouts = rollouts
        self.patience = patience or Patience(
            config.dependency_patience_s,
            hint=", then ResumeWorkflow continues where this stopped",
        )
        self.subjobs = SubJobs(clients, self.patience)
        self.engine = DurableJobEngine(
            "workflow",
            self._run,
            store,
            worker_id=config.worker_id_of("gateway"),
            workers=max(2, config.job_workers),
            queue_size=config.job_queue_size,
            history=config.job_history,
            retention_s=config.job_retention_s,
            lease_s=config.lease_of("gateway"),
            poll_s=config.gateway_job_poll_s,
            codec=WORKFLOW_CODEC,
            start=start,
        )
        self._admission = Admission(config, clients, self.engine)

    def start(self, request: Any) -> Job:
        return self._admission.start(request)

    def cancel(self, job_id: str) -> Job:
        """Cancels the workflow and, at once, the sub-job it started (a queued
        workflow has its training running already; a running one's worker also
        cancels it when it sees the flag, which covers a sub-job started in
        between)."""
        job = self.engine.cancel(job_id)
        if job.state not in (JobState.RUNNING, JobState.CANCELLED):
            return job  # it had ended: its sub-jobs ended with it
        for step in SUB_JOB_STEPS:
            rec = job.details.get("steps", {}).get(step, {})
            if rec.get("state") == RUNNING and rec.get("job_id"):
                try:
                    self.subjobs.cancel(
                        KINDS[step], rec["job_id"], Patience(0.0, first_delay_s=0)
                    )
                except LorafleetError as exc:
                    log.warning(
                        "workflow %s: cancelling %s job %s failed (%s); the "
                        "workflow's worker retries",
                        job_id,
                        step,
                        rec["job_id"],
                        exc.message,
                    )
        return self.engine.get(job_id)

    def resume(self, job_id: str) -> Job:
        job = self.engine.get(job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise FailedPrecondition(
                f"workflow {job_id} is {job.state.name}; only a FAILED or "
                "CANCELLED workflow can be resumed",
                field="job_id",
            )
        details, step = for_resume(job.details)
        where = f"from step {step}" if step else "from its first unfinished step"
        resumed, reopened = self.engine.reopen(
            job_id, f"resumed by ResumeWorkflow {where}", details
        )
        if not reopened:  # resumed or taken by someone else meanwhile
            raise FailedPrecondition(
                f"workflow {job_id} is {resumed.state.name} now; nothing to resume",
                field="job_id",
            )
        log.info("workflow %s resumed %s", job_id, where)
        return resumed

    def _run(self, ctx: JobContext, spec: WorkflowSpec) -> WorkflowOutcome:
        return WorkflowRun(
            ctx, spec, self._clients, self.subjobs, self._rollouts
        ).execute()


__all__ = ["VALIDATED_ALIAS", "WorkflowOutcome", "WorkflowSpec", "Workflows"]
