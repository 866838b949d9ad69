"""`lorafleet deployments ...`, and what the rollout commands share with them.

Shared with rollout_cli: addresses (--gateway/--registry, else the config),
deadlines (--timeout), the error convention (a gRPC error prints
``error: <CODE>: <message>`` to stderr and exits 2) and formatting. Only
lorafleet.client and the generated stubs are imported at import time; the
config module only when an address has to come from the config.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Sequence

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from lorafleet.client import Client
from lorafleet.v1 import common_pb2, gateway_pb2, registry_pb2
from services.cli.errors import report_rpc_error

DEFAULT_TIMEOUT_S = 30.0
METRICS_WINDOW_S = 300
_S = gateway_pb2.RolloutState
ACTIVE_STATES = frozenset(
    {
        _S.ROLLOUT_STATE_PENDING,
        _S.ROLLOUT_STATE_PROGRESSING,
        _S.ROLLOUT_STATE_PAUSED,
        _S.ROLLOUT_STATE_AWAITING_DECISION,
    }
)


class UsageError(Exception):
    """A bad combination of options, refused before any call."""


def cli_command(fn: Callable[[argparse.Namespace], int]):
    """Turns gRPC errors into ``error: CODE: message`` and exit status 2
    (Ctrl-C into 130, quietly)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except grpc.RpcError as exc:
            return report_rpc_error(exc)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130

    return run


def connection_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--gateway", help="gateway host:port (default from config)")
    p.add_argument("--registry", help="registry host:port (default from config)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help=f"deadline of each call (default {DEFAULT_TIMEOUT_S:g})",
    )
    return p


def locate(args: argparse.Namespace):
    """(config, the running suite it points at or None): see
    `services.local.suite_file` for the order an address is looked up in."""
    from services.common.config import Config, ConfigError, load_config
    from services.local.suite_file import find

    try:
        config = load_config(
            getattr(args, "config", None), data_dir=getattr(args, "data_dir", None)
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc
    given = bool(getattr(args, "data_dir", None))
    given = given or config.data_dir != Config().data_dir
    return config, find(config.data_dir, data_dir_given=given)


def address(args: argparse.Namespace, service: str) -> str:
    explicit = getattr(args, service, None)
    if explicit:
        return explicit
    config, suite = locate(args)
    configured = getattr(config, f"{service}_address", "")
    if configured:
        return configured
    if suite is not None and suite.address_of(service):
        return suite.address_of(service)
    return config.address_of(service)


def connect(args: argparse.Namespace, *services: str) -> Client:
    """A client for `services` ("gateway", "registry"); only their addresses
    are resolved, and channels connect when first used. TLS settings
    (LORAFLEET_TLS_*, the config file) apply as they do to the services."""
    from services.common.tls import client_kwargs

    config, _ = locate(args)
    return Client(
        **{service: address(args, service) for service in services},
        **client_kwargs(config),
        **credentials(args),
    )


def credentials(args: argparse.Namespace) -> dict[str, str | None]:
    """--api-key/--token/--project as Client arguments (None: the env vars)."""
    return {
        "api_key": getattr(args, "api_key", None),
        "token": getattr(args, "token", None),
        "project": getattr(args, "project", None),
    }


# --- formatting ---------------------------------------------------------------
def pct(bps: int) -> str:
    return f"{bps / 100:g}%"


def num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def when(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts.seconds))


def state_name(state: int) -> str:
    return _S.Name(state).removeprefix("ROLLOUT_STATE_")


def step_text(step: int, total: int) -> str:
    if not step and not total:
        return "-"
    return f"{step}/{total}" if total else str(step)


def target_text(target) -> str:
    text = target.model_id or "-"
    return text + (f" + {target.adapter_id}" if target.adapter_id else "")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def rollout_line(r: gateway_pb2.Rollout) -> str:
    return (
        f"rollout {r.id} {state_name(r.state)}: {r.deployment} {r.strategy}, "
        f"candidate {pct(r.candidate_weight_bps)}, "
        f"step {step_text(r.step, r.total_steps)}"
        + (f" - {r.message}" if r.message else "")
    )


# --- deployments --------------------------------------------------------------
_ROLE = common_pb2.TargetRole


def _targets(d: common_pb2.Deployment) -> list[common_pb2.DeploymentTarget]:
    """The deployment's arms; one written without targets has a STABLE one."""
    if d.targets:
        return list(d.targets)
    return [
        common_pb2.DeploymentTarget(
            model_id=d.model_id,
            adapter_id=d.adapter_id,
            weight_bps=10000,
            arm="stable",
            role=_ROLE.TARGET_ROLE_STABLE,
        )
    ]


def _role(target: common_pb2.DeploymentTarget) -> str:
    return _ROLE.Name(target.role).removeprefix("TARGET_ROLE_")


def _weight(target: common_pb2.DeploymentTarget) -> str:
    if target.role == _ROLE.TARGET_ROLE_SHADOW:
        return f"mirror {pct(target.mirror_bps)}"
    return pct(target.weight_bps)


def deployments_table(deployments: Sequence[common_pb2.Deployment]) -> str:
    rows = []
    for d in deployments:
        for i, t in enumerate(_targets(d)):
            first = i == 0
            rows.append(
                (
                    d.name if first else "",
                    str(d.revision) if first else "",
                    t.arm,
                    _role(t),
                    _weight(t),
                    t.model_id or "-",
                    t.adapter_id or "-",
                    when(d.update_time) if first else "",
                    (d.reason or "-") if first else "",
                )
            )
    head = ("NAME", "REV", "ARM", "ROLE", "WEIGHT", "MODEL", "ADAPTER")
    return table((*head, "UPDATED", "REASON"), rows)


def metrics_table(arms: Sequence[gateway_pb2.ArmMetrics]) -> str:
    rows = []
    for a in arms:
        errors = sum(a.errors.values())
        agree = f"{a.agreements / a.requests * 100:.1f}%" if a.requests else "-"
        rows.append(
            (
                a.arm + (" (shadow)" if a.shadow else ""),
                str(a.requests),
                f"{errors} ({errors / a.requests * 100:.1f}%)" if a.requests else "0",
                f"{a.latency_p50_ms:.0f}",
                f"{a.latency_p95_ms:.0f}",
                f"{a.latency_p99_ms:.0f}",
                str(a.empty_outputs + a.invalid_json + a.blocked_outputs),
                f"{agree} ({a.shadow_dropped} dropped)" if a.shadow else "-",
            )
        )
    head = ("ARM", "REQUESTS", "ERRORS", "P50_MS", "P95_MS", "P99_MS")
    return table((*head, "QUALITY_FAILS", "AGREEMENT"), rows)


@cli_command
def cmd_list(args) -> int:
    deployments: list[common_pb2.Deployment] = []
    token = ""
    with connect(args, "registry") as client:
        while True:
            page = client.registry.ListDeployments(
                registry_pb2.ListDeploymentsRequest(page_size=100, page_token=token),
                timeout=args.timeout,
            )
            deployments.extend(page.deployments)
            if not page.next_page_token or page.next_page_token == token:
                break
            token = page.next_page_token
    print(deployments_table(deployments) if deployments else "no deployments")
    return 0


@cli_command
def cmd_show(args) -> int:
    status = 0
    with connect(args, "registry", "gateway") as client:
        d = client.registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name=args.name), timeout=args.timeout
        ).deployment
        strategy = common_pb2.DeploymentStrategy.Name(d.strategy)
        strategy = strategy.removeprefix("DEPLOYMENT_STRATEGY_")
        print(
            f"deployment {d.name}  revision {d.revision}"
            + (f"  strategy {strategy}" if d.strategy else "")
        )
        print(
            f"updated {when(d.update_time)} by {d.updated_by or '-'}: {d.reason or '-'}"
        )
        if d.output_format or d.blocked_phrases:
            print(
                f"checks: output format {d.output_format or 'text'}, "
                f"{len(d.blocked_phrases)} blocked phrases"
            )
        rows = [
            (t.arm, _role(t), _weight(t), target_text(t), t.digest[:19] or "-")
            for t in _targets(d)
        ]
        print(table(("ARM", "ROLE", "WEIGHT", "VERSION", "DIGEST"), rows))
        try:
            m = client.gateway.GetDeploymentMetrics(
                gateway_pb2.GetDeploymentMetricsRequest(
                    deployment=d.name, window_s=METRICS_WINDOW_S
                ),
                timeout=args.timeout,
            )
            window = m.window_s or METRICS_WINDOW_S
            print(f"\nlast {window} s:")
            print(metrics_table(m.arms) if m.arms else "no requests")
        except grpc.RpcError as exc:
            status = report_rpc_error(exc)
        try:
            rollouts = client.gateway.ListRollouts(
                gateway_pb2.ListRolloutsRequest(deployment=d.name, page_size=20),
                timeout=args.timeout,
            ).rollouts
            active = [r for r in rollouts if r.state in ACTIVE_STATES]
            for r in active:
                print(f"\n{rollout_line(r)}")
                print(f"watch it with: lorafleet rollout watch {r.id}")
            if not active:
                print("\nno rollout in progress")
        except grpc.RpcError as exc:
            status = report_rpc_error(exc)
    return status


def add_deployment_commands(sub, common: argparse.ArgumentParser) -> None:
    parents = [common, connection_parser()]
    dep = sub.add_parser(
        "deployments", help="what each deployment serves"
    ).add_subparsers(dest="deployments_command", required=True)
    s = dep.add_parser(
        "list", parents=parents, help="every deployment with its arms and weights"
    )
    s.set_defaults(func=cmd_list)
    s = dep.add_parser(
        "show",
        parents=parents,
        help="one deployment: arms, the last 5 minutes' metrics, its rollout",
    )
    s.add_argument("name")
    s.set_defaults(func=cmd_show)
