"""Following other services' jobs through their restarts.

A workflow outlives the services it drives: when a service goes away (a
restart, a crash, a deploy) the workflow waits with backoff and reconnects
for as long as `dependency_patience_s` allows (`services.common.retry`), and
a watch resumes with `after_sequence` where it broke off. Start calls carry
request ids, so retrying one never starts a second job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lorafleet.v1 import common_pb2, merger_pb2, trainer_pb2, validator_pb2
from services.common.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    LorafleetError,
    NotFound,
    Unavailable,
    from_code,
)
from services.common.retry import Patience, Reconnect, call, disconnected

__all__ = ["Patience", "SubJobs", "call", "outcome_of"]

log = logging.getLogger(__name__)

TERMINAL = (
    common_pb2.JOB_STATE_SUCCEEDED,
    common_pb2.JOB_STATE_FAILED,
    common_pb2.JOB_STATE_CANCELLED,
)


@dataclass(frozen=True)
class SubJobKind:
    """How to watch, read and cancel one service's jobs."""

    stage: str  # "train", "merge", "validate"
    service: str  # "trainer", ...
    watch: str
    watch_request: Any
    get: str
    get_request: Any
    cancel: str
    cancel_request: Any


TRAIN = SubJobKind(
    "train",
    "trainer",
    "WatchTrainJob",
    trainer_pb2.WatchTrainJobRequest,
    "GetTrainJob",
    trainer_pb2.GetTrainJobRequest,
    "CancelTrainJob",
    trainer_pb2.CancelTrainJobRequest,
)
MERGE = SubJobKind(
    "merge",
    "merger",
    "WatchMergeJob",
    merger_pb2.WatchMergeJobRequest,
    "GetMergeJob",
    merger_pb2.GetMergeJobRequest,
    "CancelMergeJob",
    merger_pb2.CancelMergeJobRequest,
)
VALIDATE = SubJobKind(
    "validate",
    "validator",
    "WatchValidationJob",
    validator_pb2.WatchValidationJobRequest,
    "GetValidationJob",
    validator_pb2.GetValidationJobRequest,
    "CancelValidationJob",
    validator_pb2.CancelValidationJobRequest,
)
KINDS = {k.stage: k for k in (TRAIN, MERGE, VALIDATE)}


class SubJobs:
    """Follows, reads and cancels sub-jobs through the services' clients."""

    def __init__(
        self, clients: dict[str, Any], patience: Patience, watch_slice_s: float = 5.0
    ) -> None:
        self._clients = clients
        self.patience = patience
        self.watch_slice_s = watch_slice_s

    def get(self, kind: SubJobKind, job_id: str) -> Any:
        client = self._clients[kind.service]
        return call(
            self.patience,
            kind.service,
            f"reading {kind.stage} job {job_id}",
            lambda: getattr(client, kind.get)(kind.get_request(job_id=job_id)).job,
        )

    def cancel(self, kind: SubJobKind, job_id: str, patience: Patience | None = None):
        client = self._clients[kind.service]
        return call(
            patience or self.patience,
            kind.service,
            f"cancelling {kind.stage} job {job_id}",
            lambda: getattr(client, kind.cancel)(kind.cancel_request(job_id=job_id)),
        )

    def follow(
        self,
        kind: SubJobKind,
        job_id: str,
        *,
        after: int,
        on_event: Callable[[Any], None],
        cancel_requested: Callable[[], bool],
        halted: Callable[[], bool],
    ) -> Any:
        """Relays the sub-job's events after sequence `after` until it ends;
        returns the final job.

        Watches in slices of `watch_slice_s`, so a quiet sub-job is still
        checked on (a Get between slices) and a halt is noticed. Reconnects
        with `after_sequence` when the service goes away, within patience.
        When `cancel_requested()` turns true the sub-job is cancelled (also
        through an outage) and its end awaited; when `halted()` (this gateway
        stops or lost the workflow) following stops at once, leaving the
        sub-job running for whoever continues the workflow.
        """
        client = self._clients[kind.service]
        what = f"following {kind.stage} job {job_id}"
        outage = Reconnect(self.patience, kind.service, what)
        cancel_sent = False

        def check_flags() -> None:
            nonlocal cancel_sent
            if halted() and not cancel_requested():
                raise Cancelled(f"stopped {what}; the workflow continues elsewhere")
            if cancel_requested() and not cancel_sent:
                self.cancel(kind, job_id)
                cancel_sent = True

        while True:
            check_flags()
            try:
                complete = False  # the stream ended on its own, not by our slice
                try:
                    for update in getattr(client, kind.watch)(
                        kind.watch_request(job_id=job_id, after_sequence=after),
                        timeout=self.watch_slice_s,
                    ):
                        outage.recovered()
                        after = update.event.sequence
                        on_event(update)
                        check_flags()
                    complete = True
                except DeadlineExceeded:
                    pass  # the slice ended; the Get below checks on the job
                final = getattr(client, kind.get)(kind.get_request(job_id=job_id)).job
                outage.recovered()
                if final.status.state in TERMINAL:
                    if complete:
                        return final  # every event up to the last one relayed
                    continue  # the next watch relays what the slice missed
                if complete:  # a stream ended early: the server is stopping
                    raise Unavailable(f"{kind.service} ended the watch early")
            except NotFound as exc:
                raise FailedPrecondition(
                    f"{kind.stage} job {job_id} is unknown to the {kind.service} "
                    f"({exc.message}); ResumeWorkflow starts the step again"
                ) from exc
            except LorafleetError as exc:
                if not disconnected(exc):
                    raise
                outage.wait_or_give_up(exc)
                log.info("%s: re-attaching after event %d", what, after)


def outcome_of(kind: SubJobKind, final: Any, cancelled_here: bool) -> Any:
    """`final` if the sub-job succeeded, else the error the workflow fails with."""
    state = final.status.state
    job_id = final.status.job_id
    if state == common_pb2.JOB_STATE_SUCCEEDED:
        return final
    if state == common_pb2.JOB_STATE_CANCELLED:
        if cancelled_here:
            raise Cancelled(f"{kind.stage} job {job_id} was cancelled")
        raise FailedPrecondition(
            f"{kind.stage} job {job_id} was cancelled outside this workflow; "
            "ResumeWorkflow starts the step again"
        )
    err = final.status.error
    raise from_code(
        err.code or "INTERNAL", f"{kind.stage} job {job_id} failed: {err.message}"
    )
