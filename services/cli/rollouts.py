"""`lorafleet rollout ...`: start, watch and steer rollouts through the gateway."""

from __future__ import annotations

import argparse
import sys
import time

import grpc

from lorafleet.client import Client
from lorafleet.v1 import gateway_pb2
from services.cli.deployments import (
    ACTIVE_STATES,
    UsageError,
    cli_command,
    connect,
    connection_parser,
    rollout_line,
    state_name,
    target_text,
)
from services.cli.rollout_format import (
    event_line,
    experiment_table,
    format_metrics,
    rollout_detail,
    rollouts_table,
)

__all__ = [
    "event_line",
    "experiment_table",
    "format_metrics",
    "rollout_detail",
    "rollouts_table",
]

STRATEGIES = ("canary", "ab_test", "blue_green", "shadow", "replace")
_S = gateway_pb2.RolloutState
FAILED_STATES = frozenset({_S.ROLLOUT_STATE_ROLLED_BACK, _S.ROLLOUT_STATE_FAILED})
# WatchRollout: reconnects in a row on UNAVAILABLE before giving up.
WATCH_RECONNECTS = 5
_sleep = time.sleep  # tests replace it


def _steps(text: str) -> list[int]:
    """``500,2500,5000`` (basis points) or ``5%,25%,50%``."""
    try:
        return [
            round(float(p[:-1]) * 100) if p.endswith("%") else int(p)
            for p in (part.strip() for part in text.split(","))
        ]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of basis points"
        ) from None


# Options that only mean something for some strategies: (dest, flag, strategies).
_STRATEGY_OPTIONS = (
    ("steps", "--steps", ("canary",)),
    ("interval", "--interval", ("canary",)),
    ("split", "--split", ("ab_test",)),
    ("duration", "--duration", ("ab_test", "shadow")),
    ("sample_size", "--sample-size", ("ab_test", "shadow")),
    ("mirror", "--mirror", ("shadow",)),
    ("manual_decision", "--manual-decision", ("ab_test", "shadow")),
)


def build_start_request(args: argparse.Namespace) -> gateway_pb2.StartRolloutRequest:
    if args.force and not args.reason:
        raise UsageError("--force needs --reason (it is audited)")
    strategy = args.strategy or "canary"
    for dest, flag, strategies in _STRATEGY_OPTIONS:
        value = getattr(args, dest)
        if value not in (None, False) and strategy not in strategies:
            raise UsageError(
                f"{flag} applies to --strategy {' or '.join(strategies)}, "
                f"not {strategy}"
            )
    s = gateway_pb2.RolloutSettings(
        strategy=args.strategy or "",
        promote_alias=args.alias or "",
        manual_decision=args.manual_decision,
    )
    if args.steps is not None:
        s.canary.steps_bps.extend(args.steps)
    if args.interval is not None:
        s.canary.step_interval_s = args.interval
    if args.split is not None:
        s.ab_test.candidate_weight_bps = args.split
    experiment = s.ab_test if strategy == "ab_test" else s.shadow
    if args.duration is not None:
        experiment.duration_s = args.duration
    if args.sample_size is not None:
        experiment.sample_size = args.sample_size
    if args.mirror is not None:
        s.shadow.mirror_bps = args.mirror
    if args.min_requests is not None:
        s.analysis.min_requests = args.min_requests
    if args.max_error_rate is not None:
        s.analysis.max_error_rate = args.max_error_rate
    if args.max_latency_ratio is not None:
        s.analysis.max_latency_ratio = args.max_latency_ratio
    return gateway_pb2.StartRolloutRequest(
        deployment=args.deployment,
        model_id=args.model,
        adapter_id=args.adapter or "",
        settings=s,
        force=args.force,
        reason=args.reason or "",
        request_id=args.request_id or "",
    )


@cli_command
def cmd_start(args) -> int:
    request = build_start_request(args)
    with connect(args, "gateway") as client:
        r = client.gateway.StartRollout(request, timeout=args.timeout).rollout
        print(rollout_line(r))
        print(f"stable {target_text(r.stable)} -> candidate {target_text(r.candidate)}")
        if not args.watch:
            print(f"watch it with: lorafleet rollout watch {r.id}")
            return 0
        return watch(client, r.id, args.timeout)


@cli_command
def cmd_status(args) -> int:
    with connect(args, "gateway") as client:
        if args.rollout_id:
            r = client.gateway.GetRollout(
                gateway_pb2.GetRolloutRequest(rollout_id=args.rollout_id),
                timeout=args.timeout,
            ).rollout
            print(rollout_detail(r))
            return 0
        rollouts: list[gateway_pb2.Rollout] = []
        token = ""
        while len(rollouts) < args.limit:
            page = client.gateway.ListRollouts(
                gateway_pb2.ListRolloutsRequest(
                    deployment=args.deployment or "",
                    page_size=min(args.limit - len(rollouts), 100),
                    page_token=token,
                ),
                timeout=args.timeout,
            )
            rollouts.extend(page.rollouts)
            if not page.next_page_token or page.next_page_token == token:
                break
            token = page.next_page_token
    if not rollouts:
        print("no rollouts")
        return 0
    print(rollouts_table(rollouts[: args.limit]))
    return 0


def watch(client: Client, rollout_id: str, timeout: float) -> int:
    """Prints each event until the rollout ends; 1 if it rolled back or failed.

    The stream has no deadline; on UNAVAILABLE it re-attaches after the last
    event seen, up to WATCH_RECONNECTS times in a row with backoff."""
    after, failures, last = 0, 0, None
    while True:
        try:
            for update in client.gateway.WatchRollout(
                gateway_pb2.WatchRolloutRequest(
                    rollout_id=rollout_id, after_sequence=after
                )
            ):
                failures = 0
                if update.HasField("rollout"):
                    last = update.rollout
                if update.HasField("event"):
                    after = max(after, update.event.sequence)
                    total = last.total_steps if last is not None else 0
                    print(event_line(update.event, total), flush=True)
            if last is None or last.state in ACTIVE_STATES:
                last = client.gateway.GetRollout(
                    gateway_pb2.GetRolloutRequest(rollout_id=rollout_id),
                    timeout=timeout,
                ).rollout
            if last.state not in ACTIVE_STATES:
                break
            reason = f"stream ended while the rollout is {state_name(last.state)}"
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            reason = f"UNAVAILABLE: {exc.details()}"
        if failures >= WATCH_RECONNECTS:
            print(
                f"error: {reason}; gave up after {failures} reconnects", file=sys.stderr
            )
            return 2
        failures += 1
        print(
            f"({reason}; reconnecting, {failures}/{WATCH_RECONNECTS})", file=sys.stderr
        )
        _sleep(min(0.5 * 2 ** (failures - 1), 8.0))
    print(rollout_line(last))
    return 1 if last.state in FAILED_STATES else 0


@cli_command
def cmd_watch(args) -> int:
    with connect(args, "gateway") as client:
        return watch(client, args.rollout_id, args.timeout)


def _control(rpc: str, request_type):
    @cli_command
    def run(args) -> int:
        request = request_type(rollout_id=args.rollout_id, reason=args.reason or "")
        with connect(args, "gateway") as client:
            r = getattr(client.gateway, rpc)(request, timeout=args.timeout).rollout
        print(rollout_line(r))
        return 0

    return run


@cli_command
def cmd_conclude(args) -> int:
    with connect(args, "gateway") as client:
        response = client.gateway.ConcludeExperiment(
            gateway_pb2.ConcludeExperimentRequest(rollout_id=args.rollout_id),
            timeout=args.timeout,
        )
    print(experiment_table(response.result))
    print(rollout_line(response.rollout))
    return 0


def add_rollout_commands(sub, common: argparse.ArgumentParser) -> None:
    parents = [common, connection_parser()]
    ro = sub.add_parser(
        "rollout", help="move a deployment's traffic to a new version, step by step"
    ).add_subparsers(dest="rollout_command", required=True)

    s = ro.add_parser(
        "start",
        parents=parents,
        help="start a rollout (canary, ab_test, blue_green, shadow, replace)",
        description="Starts moving DEPLOYMENT's traffic to MODEL (and --adapter). "
        "Unset options take the gateway's defaults. Strategy options are refused "
        "with another strategy.",
    )
    s.add_argument("deployment")
    s.add_argument("model", help="id, name:version or name@alias")
    s.add_argument("--adapter", help="adapter applied on top of MODEL")
    s.add_argument("--strategy", choices=STRATEGIES, help="(default canary)")
    s.add_argument(
        "--steps",
        type=_steps,
        metavar="BPS,BPS,...",
        help="canary weights in basis points, e.g. 500,2500,5000 (or 5%%,25%%)",
    )
    s.add_argument("--interval", type=float, metavar="SECONDS", help="canary step")
    s.add_argument("--min-requests", type=int, metavar="N", help="per step")
    s.add_argument("--max-error-rate", type=float, metavar="X")
    s.add_argument("--max-latency-ratio", type=float, metavar="X", help="p95 ratio")
    s.add_argument("--split", type=int, metavar="BPS", help="ab_test candidate share")
    s.add_argument("--duration", type=float, metavar="SECONDS", help="ab_test/shadow")
    s.add_argument("--sample-size", type=int, metavar="N", help="ab_test/shadow")
    s.add_argument("--mirror", type=int, metavar="BPS", help="shadow mirrored share")
    s.add_argument("--alias", help="alias moved on promotion (default production)")
    s.add_argument(
        "--manual-decision",
        action="store_true",
        help="ab_test/shadow: wait for promote or abort when the experiment ends",
    )
    s.add_argument(
        "--force", action="store_true", help="start without a passing validation"
    )
    s.add_argument("--reason", help="why (required with --force)")
    s.add_argument("--request-id", help="idempotency key")
    s.add_argument(
        "--watch",
        action="store_true",
        help="follow the rollout; exit 1 if it rolls back or fails",
    )
    s.set_defaults(func=cmd_start)

    s = ro.add_parser(
        "status", parents=parents, help="one rollout in detail, or recent ones"
    )
    s.add_argument("rollout_id", nargs="?")
    s.add_argument("--deployment", help="only this deployment's rollouts")
    s.add_argument("--limit", type=int, default=20, help="rows listed (default 20)")
    s.set_defaults(func=cmd_status)

    s = ro.add_parser(
        "watch",
        parents=parents,
        help="follow a rollout's events until it ends",
        description="Exits 0 when the rollout is promoted (or ends otherwise), "
        "1 when it is rolled back or fails, 2 on an error.",
    )
    s.add_argument("rollout_id")
    s.set_defaults(func=cmd_watch)

    for name, rpc, request_type, text in (
        ("promote", "PromoteRollout", gateway_pb2.PromoteRolloutRequest,
         "send all traffic to the candidate now and move the alias"),
        ("abort", "AbortRollout", gateway_pb2.AbortRolloutRequest,
         "roll back to the stable version now"),
        ("pause", "PauseRollout", gateway_pb2.PauseRolloutRequest,
         "hold the rollout at its current weights"),
        ("resume", "ResumeRollout", gateway_pb2.ResumeRolloutRequest,
         "continue a paused rollout (the current step starts over)"),
    ):  # fmt: skip
        s = ro.add_parser(name, parents=parents, help=text)
        s.add_argument("rollout_id")
        s.add_argument("--reason", help="recorded with the rollout")
        s.set_defaults(func=_control(rpc, request_type))

    s = ro.add_parser(
        "conclude", parents=parents, help="end an ab_test and show its result"
    )
    s.add_argument("rollout_id")
    s.set_defaults(func=cmd_conclude)
