"""Rollouts: start (after every check), read, steer and watch them.

Each rollout is a job on the gateway's durable `rollout` queue (its own
tables in the gateway database), driven by whichever replica holds its
lease; operators' commands reach that replica through `RolloutControls`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from services.common.auth.caller import acting_as, current_caller
from services.common.config import Config
from services.common.database import Transactions, utcnow
from services.common.errors import FailedPrecondition, NotFound
from services.common.jobqueue import DurableJobEngine, JobStore
from services.common.jobs import Job, JobContext, JobEvent
from services.common.paging import decode_token, encode_token, page_size
from services.common.retry import Patience, Patient
from services.gateway.metrics import ArmTotals, MetricsRecorder
from services.gateway.rollouts import strategies
from services.gateway.rollouts.admission import RolloutAdmission, check_request
from services.gateway.rollouts.controller import Finished, RolloutRun
from services.gateway.rollouts.controls import (
    ABORT,
    CONCLUDE,
    ORPHAN_LOCK_S,
    PROMOTE,
    RolloutControls,
)
from services.gateway.rollouts.experiment import ExperimentOutcome, conclude
from services.gateway.rollouts.model import (
    PROGRESSING,
    ROLLOUT_CODEC,
    RolloutOutcome,
    RolloutSpec,
)
from services.gateway.rollouts.settings import RolloutSettings

log = logging.getLogger(__name__)

# The rollout queue's tables in the gateway database: rollout_jobs, ...
QUEUE = "rollout"


class Rollouts:
    def __init__(
        self,
        config: Config,
        registry: Any,
        inference: Any,
        store: JobStore,
        db: Transactions,
        recorder: MetricsRecorder,
        *,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        patience = Patience(
            config.dependency_patience_s,
            hint="; the rollout continues when it is back (or AbortRollout)",
        )
        self._registry = registry
        self._patient_registry = Patient(registry, "registry", patience)
        self._patient_inference = Patient(inference, "inference", patience)
        self._admission = RolloutAdmission(registry, inference)
        self._recorder = recorder
        self._clock = clock
        self.controls = RolloutControls(db)
        self.engine = DurableJobEngine(
            QUEUE,
            self._run,
            store,
            worker_id=config.worker_id_of("gateway"),
            workers=max(1, config.max_rollouts),
            queue_size=config.job_queue_size,
            history=config.job_history,
            retention_s=config.job_retention_s,
            lease_s=config.lease_of("gateway"),
            poll_s=config.gateway_job_poll_s,
            codec=ROLLOUT_CODEC,
            on_end=self._ended,
            start=start,
        )

    # --- starting ------------------------------------------------------------------
    def start(
        self,
        deployment: str,
        model_id: str,
        adapter_id: str,
        settings: RolloutSettings,
        *,
        force: bool = False,
        reason: str = "",
        request_id: str = "",
    ) -> Job:
        full = check_request(deployment, model_id, settings, force, reason)
        digest = _digest(deployment, model_id, adapter_id, settings, force, reason)
        if request_id:
            earlier = self._earlier(request_id, digest)
            if earlier is not None:
                return earlier
        spec = self._admission.spec(
            deployment, model_id, adapter_id, full, force, reason
        )
        self.engine.check_room()
        rollout_id = self.engine.new_id()
        holder = self.controls.acquire(rollout_id, deployment, self._stale)
        if holder:
            earlier = self._earlier(request_id, digest) if request_id else None
            if earlier is not None:
                return earlier
            raise FailedPrecondition(
                f"deployment {deployment!r} has a rollout in progress: {holder} "
                f"(PromoteRollout or AbortRollout it first)",
                field="deployment",
            )
        try:
            # The rollout belongs to the deployment's project, whichever one
            # the caller acts in.
            with acting_as(current_caller().in_project(spec.project)):
                job = self.engine.submit(
                    spec,
                    request_id=request_id,
                    digest=digest,
                    job_id=rollout_id,
                    details={
                        "phase": PROGRESSING,
                        "total_steps": strategies.get(full.strategy).total_steps(full),
                    },
                )
        except Exception:
            self.controls.forget(rollout_id)
            raise
        if job.id != rollout_id:  # the same request, accepted meanwhile
            self.controls.forget(rollout_id)
        log.info(
            "rollout %s: %s of %s on deployment %s%s",
            job.id,
            full.strategy,
            spec.candidate.label,
            deployment,
            f" (forced: {reason})" if force else "",
        )
        return job

    def _earlier(self, request_id: str, digest: str) -> Job | None:
        """The rollout this request id started (ALREADY_EXISTS if it was used
        for a different request)."""
        return self.engine.find(request_id, digest)

    def check_free(self, deployment: str, action: str) -> None:
        """FAILED_PRECONDITION if a running rollout holds the deployment (a
        manual Deploy or Rollback would be undone by its next step)."""
        holder, created = self.controls.holder(deployment)
        if holder and not self._stale(holder, created):
            raise FailedPrecondition(
                f"deployment {deployment!r} has a rollout in progress: {holder}; "
                f"AbortRollout or PromoteRollout it before {action}",
                field="deployment",
            )

    def _stale(self, holder_id: str, created: dt.datetime | None) -> bool:
        try:
            return self.engine.get(holder_id).state.terminal
        except NotFound:
            age = (utcnow() - created).total_seconds() if created else ORPHAN_LOCK_S
            return age >= ORPHAN_LOCK_S

    # --- reading -------------------------------------------------------------------
    def get(self, rollout_id: str) -> Job:
        if not rollout_id:
            raise NotFound("rollout_id is required", field="rollout_id")
        try:
            return self.engine.get(rollout_id)
        except NotFound:
            raise NotFound(
                f"no rollout has the id {rollout_id[:80]!r}", field="rollout_id"
            ) from None

    def list(self, deployment: str, size_: int, token: str) -> tuple[list[Job], str]:
        size = page_size(size_)
        scope = f"rollouts:{deployment}"
        offset = decode_token(token, scope)
        ids = self.controls.list_ids(deployment, offset, size + 1)
        jobs = []
        for rollout_id in ids[:size]:
            try:
                jobs.append(self.engine.get(rollout_id))
            except NotFound:
                continue  # pruned after its retention, or never queued
        nxt = encode_token(offset + size, scope) if len(ids) > size else ""
        return jobs, nxt

    def watch(
        self, rollout_id: str, after: int, alive: Callable[[], bool]
    ) -> Iterator[tuple[JobEvent, Job]]:
        self.get(rollout_id)
        yield from self.engine.watch(rollout_id, after, alive)

    # --- steering ------------------------------------------------------------------
    def pause(self, rollout_id: str, paused: bool, reason: str) -> Job:
        self._running(rollout_id, "paused" if paused else "resumed")
        if not self.controls.pause(rollout_id, paused, reason):
            self._finished(rollout_id)
        return self.get(rollout_id)

    def promote(self, rollout_id: str, reason: str) -> Job:
        return self._command(rollout_id, PROMOTE, reason)

    def abort(self, rollout_id: str, reason: str) -> Job:
        return self._command(rollout_id, ABORT, reason)

    def conclude(self, rollout_id: str) -> tuple[ExperimentOutcome, Job]:
        """Ends an A/B test now; the result as its controller recorded it (or,
        if the controller has not got to it within a few ticks, as of now)."""
        job = self._running(rollout_id, "concluded")
        spec: RolloutSpec = job.spec
        if spec.strategy != "ab_test":
            raise FailedPrecondition(
                f"rollout {rollout_id} is a {spec.strategy} rollout; only an ab_test "
                "is concluded (PromoteRollout or AbortRollout end the others)",
                field="rollout_id",
            )
        if not job.details.get("experiment"):
            if not self.controls.command(rollout_id, CONCLUDE, "ConcludeExperiment"):
                self._finished(rollout_id)
            deadline = time.monotonic() + 5 * spec.settings.tick_s + 5.0
            while time.monotonic() < deadline:
                job = self.engine.get(rollout_id)
                if job.details.get("experiment") or job.state.terminal:
                    break
                time.sleep(0.05)
        if job.details.get("experiment"):
            return ExperimentOutcome.from_dict(job.details["experiment"]), job
        return self._experiment_now(job), job

    def _experiment_now(self, job: Job) -> ExperimentOutcome:
        spec: RolloutSpec = job.spec
        arm = strategies.get(spec.strategy).arm_of(job.id)
        mark = job.details.get("rollout_mark")
        if not mark:
            return conclude(
                ArmTotals(), ArmTotals(), spec.settings.ab_test.confidence, arm
            )
        now = self._recorder.totals_since(spec.deployment, mark["since"])
        totals = {
            arm: t.minus(ArmTotals.from_dict(mark["arms"].get(arm, {})))
            for arm, t in now.items()
        }
        return conclude(
            totals.get("stable", ArmTotals()),
            totals.get(arm, ArmTotals()),
            spec.settings.ab_test.confidence,
            arm,
        )

    def _command(self, rollout_id: str, command: str, reason: str) -> Job:
        self._running(
            rollout_id, f"{command}d" if command.endswith("e") else f"{command}ed"
        )
        if not self.controls.command(
            rollout_id, command, reason or f"{command} requested"
        ):
            self._finished(rollout_id)
        return self.get(rollout_id)

    def _running(self, rollout_id: str, verb: str) -> Job:
        job = self.get(rollout_id)
        if job.state.terminal:
            self._finished(rollout_id, job, verb)
        return job

    def _finished(
        self, rollout_id: str, job: Job | None = None, verb: str = "changed"
    ) -> None:
        job = job or self.get(rollout_id)
        outcome: RolloutOutcome | None = job.result
        how = outcome.state if outcome is not None else job.state.name
        raise FailedPrecondition(
            f"rollout {rollout_id} has finished ({how}); a finished rollout cannot "
            f"be {verb}",
            field="rollout_id",
        )

    # --- running -------------------------------------------------------------------
    def _run(self, ctx: JobContext, spec: RolloutSpec) -> RolloutOutcome:
        strategy = strategies.get(spec.strategy)
        run = RolloutRun(
            ctx,
            spec,
            self._patient_registry,
            self._patient_inference,
            self._recorder,
            self.controls,
            self._clock,
        )
        if ctx.job.attempt > 1:
            log.info(
                "rollout %s: attempt %d continues at step %s",
                ctx.job.id,
                ctx.job.attempt,
                ctx.details.get("step", 0),
            )
        elif not ctx.details.get("started"):
            why = f" (forced: {spec.reason})" if spec.force else ""
            run.event(
                "started",
                f"{spec.strategy} of {spec.candidate.label} on {spec.deployment} "
                f"(stable: {spec.stable.label}){why}",
                record={"started": True},
            )
        try:
            outcome = strategy.run(run)
        except Finished as finished:
            outcome = finished.outcome
        self.controls.release(ctx.job.id)
        return outcome

    def _ended(self, rollout_id: str) -> None:
        """A job that ended here (also by failing) frees its deployment."""
        try:
            if self.engine.get(rollout_id).state.terminal:
                self.controls.release(rollout_id)
        finally:
            self.controls.drop_waker(rollout_id)

    def shutdown(self, grace_s: float) -> None:
        self.engine.shutdown(grace_s)


def _digest(*parts: Any) -> str:
    deployment, model_id, adapter_id, settings, force, reason = parts
    raw = json.dumps(
        [deployment, model_id, adapter_id, settings.to_dict(), force, reason],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(raw.encode()).hexdigest()


__all__ = ["QUEUE", "Rollouts"]
