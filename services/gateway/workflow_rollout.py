"""A workflow's deploy step as a rollout: the new merged model is rolled out
against what the deployment serves, with the request's strategy and
settings, and the step ends when the rollout does.

The rollout is started with a request id derived from the workflow's, so a
gateway that resumes the workflow re-attaches to the same rollout.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from lorafleet.v1 import common_pb2
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    LorafleetError,
    from_code,
)
from services.common.jobs import JobContext
from services.gateway.rollout_convert import settings_from_pb
from services.gateway.rollouts import strategies
from services.gateway.rollouts.model import PROMOTED, RolloutOutcome
from services.gateway.rollouts.settings import RolloutSettings, check_common

ENUM_STRATEGIES = {
    common_pb2.DEPLOYMENT_STRATEGY_UNSPECIFIED: "",
    common_pb2.DEPLOYMENT_STRATEGY_REPLACE: "replace",
    common_pb2.DEPLOYMENT_STRATEGY_BLUE_GREEN: "blue_green",
    common_pb2.DEPLOYMENT_STRATEGY_CANARY: "canary",
    common_pb2.DEPLOYMENT_STRATEGY_AB: "ab_test",
    common_pb2.DEPLOYMENT_STRATEGY_SHADOW: "shadow",
}
POLL_S = 0.5


def rollout_settings_of(request: Any) -> RolloutSettings | None:
    """The workflow's rollout settings (defaults filled in and checked), or
    None when it deploys by replacing. Errors name the request's fields."""
    if request.strategy not in ENUM_STRATEGIES:
        raise InvalidArgument(
            f"strategy {request.strategy} is not a DeploymentStrategy value",
            field="strategy",
        )
    by_enum = ENUM_STRATEGIES[request.strategy]
    given = request.rollout.strategy
    if given and by_enum and given != by_enum and by_enum != "replace":
        raise InvalidArgument(
            f"strategy says {by_enum} but rollout.strategy says {given}; give one",
            field="rollout.strategy",
        )
    name = given or by_enum
    if name in ("", "replace") and not request.HasField("rollout"):
        return None
    settings = settings_from_pb(request.rollout)
    settings = dataclasses.replace(settings, strategy=name or "canary")
    full = settings.with_defaults()
    try:
        strategies.get(full.strategy)
        check_common(full)
        strategies.get(full.strategy).check(full)
    except LorafleetError as exc:
        raise exc.rename_fields({"settings": "rollout"}) from None
    return None if full.strategy == "replace" else full


def roll_out(
    ctx: JobContext,
    rollouts: Any,
    deployment: str,
    model_id: str,
    settings: RolloutSettings,
    rec: dict[str, Any],
    save: Any,
    force_reason: str = "",
) -> RolloutOutcome:
    """Starts (or re-attaches to) the workflow's rollout and waits for its end.

    `force_reason` (a workflow forced past failed gates) forces the rollout
    too, with the same audited reason."""
    job = rollouts.start(
        deployment,
        model_id,
        "",
        settings,
        force=bool(force_reason),
        reason=(
            f"workflow {ctx.job.id}: {force_reason}"
            if force_reason
            else f"workflow {ctx.job.id}"
        ),
        request_id=f"{ctx.job.id}-rollout",
    )
    if rec.get("job_id") != job.id:
        rec["job_id"] = job.id
        save()
    aborted = False
    while not job.state.terminal:
        if ctx.cancel_requested and not aborted:
            rollouts.abort(job.id, f"workflow {ctx.job.id} was cancelled")
            aborted = True
        elif not ctx.cancel_requested:
            ctx.check_cancelled()  # this gateway stopping: the step stays RUNNING
        time.sleep(POLL_S)
        job = rollouts.get(job.id)
    outcome = job.result
    if isinstance(outcome, RolloutOutcome) and outcome.state == PROMOTED:
        return outcome
    if isinstance(outcome, RolloutOutcome):
        raise FailedPrecondition(
            f"rollout {job.id} rolled back: {outcome.reason}; deployment "
            f"{deployment!r} still serves its previous version"
        )
    raise from_code(
        job.error_code or "INTERNAL",
        f"rollout {job.id} failed: {job.error_message or job.state.name}",
    )
