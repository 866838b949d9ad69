"""The `lorafleet` command: serve, up, demo, models, datasets, db, registry,
rollout, deployments."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import grpc

from services.cli.auth import add_auth_commands
from services.cli.deployments import (
    UsageError,
    add_deployment_commands,
    connect,
)
from services.cli.errors import report_rpc_error
from services.cli.merge import add_merge_command
from services.cli.model_commands import add_model_commands
from services.cli.rollouts import add_rollout_commands
from services.common.config import SERVICE_NAMES, ConfigError, load_config
from services.local.launcher import DEFAULT_METRICS_BASE_PORT


def _config(args):
    return load_config(
        getattr(args, "config", None), data_dir=getattr(args, "data_dir", None)
    )


def local_auth_mode(args, config) -> str:
    """`lorafleet up`/`demo`: --auth, else auth_mode when the environment or
    config file sets it, else "disabled" (local development)."""
    if getattr(args, "auth", None):
        return args.auth
    if "LORAFLEET_AUTH_MODE" in os.environ:
        return config.auth_mode
    path = getattr(args, "config", None) or os.environ.get("LORAFLEET_CONFIG")
    if path:
        import yaml

        try:
            if "auth_mode" in (yaml.safe_load(Path(path).read_text()) or {}):
                return config.auth_mode
        except (OSError, yaml.YAMLError, TypeError):
            pass  # load_config already read it; its errors are reported there
    return "disabled"


def local_auth_config(args, config):
    """The config `up` runs the suite with: its auth mode and, when auth is
    required and no service secret is configured, one kept in the data
    directory (created once, readable by its owner only)."""
    import dataclasses
    import secrets

    mode = local_auth_mode(args, config)
    config = dataclasses.replace(config, auth_mode=mode)
    if mode == "required" and not config.auth_service_secret:
        path = config.data_dir / "auth" / "service-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        secret = path.read_text().strip()
        config = dataclasses.replace(config, auth_service_secret=secret)
    return config


def announce_auth(config) -> None:
    if config.auth_mode == "disabled":
        print(
            "auth: disabled (local development: anyone who can reach these ports "
            "may do anything; `lorafleet up --auth required` turns it on)",
            flush=True,
        )
    else:
        print(
            "auth: required; create the first admin key with: lorafleet auth keys "
            f"create --bootstrap --data-dir {config.data_dir} --name me --role "
            "'*=admin' (then export LORAFLEET_API_KEY=<the key>)",
            flush=True,
        )


def cmd_serve(args) -> int:
    from services.common.entry import run_service

    rest = list(args.rest)
    if args.config:
        rest += ["--config", args.config]
    if args.data_dir:
        rest += ["--data-dir", args.data_dir]
    run_service(args.service, rest)
    return 0


def cmd_up(args) -> int:
    """Runs the suite under a supervisor until Ctrl-C/SIGTERM or a crash loop."""
    from services.local.launcher import (
        LocalSuite,
        plan_metrics_ports,
        plan_ports,
        start_order,
    )
    from services.local.restart_policy import RestartPolicy
    from services.local.suite_file import SUITE_FILE, RunningSuite, publish, withdraw
    from services.local.suite_file import read as read_suite
    from services.local.supervisor import Supervisor

    try:
        policy = RestartPolicy(
            max_restarts=args.max_restarts,
            initial_backoff_s=args.restart_backoff,
            max_backoff_s=args.restart_backoff_max,
            stable_after_s=args.stable_after,
        )
    except ValueError as exc:
        print(f"lorafleet up: {exc}", file=sys.stderr)
        return 2
    if args.inference_replicas < 1:
        print("lorafleet up: --inference-replicas must be at least 1", file=sys.stderr)
        return 2
    config = local_auth_config(args, _config(args))
    running = read_suite(config.data_dir / SUITE_FILE)
    if running is not None:
        raise UsageError(
            f"a suite (pid {running.pid}) already runs on {running.data_dir}, "
            f"its gateway at {running.address_of('gateway')}: stop it first, or "
            "give this one another --data-dir"
        )
    ports = plan_ports(args.base_port, args.inference_replicas)
    suite = LocalSuite(
        config=config,
        ports=ports,
        log_dir=config.data_dir / "logs",
        names=start_order(args.inference_replicas),
        metrics_ports=plan_metrics_ports(ports, args.metrics_base_port),
    )
    announce_auth(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    record = RunningSuite(
        pid=os.getpid(),
        hostname=socket.gethostname(),
        data_dir=str(config.data_dir.resolve()),
        staging_dir=str(config.staging_dir.resolve()),
        addresses={name: suite.address(name) for name in suite.names},
        metrics={n: suite.metrics_url(n) for n in suite.names if suite.metrics_url(n)},
    )
    return Supervisor(
        suite,
        policy,
        wait=stop.wait,
        on_serving=lambda: publish(record),
        on_stopped=lambda: withdraw(config.data_dir, record.pid),
    ).run()


def cmd_demo(args) -> int:
    from services.demo.run import run_demo

    config = _config(args)
    return run_demo(
        local_auth_config(args, config),
        steps=args.steps,
        base_port=args.base_port,
        keep_running=False,
    )


def cmd_datasets_append(args) -> int:
    tags = {}
    for tag in args.tag or ():
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {tag!r} is not KEY=VALUE")
        tags[key] = value
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{args.file} is not a file")
    with connect(args, "registry") as client:
        r = client.append_dataset(
            args.dataset_id,
            file=path,
            deduplicate=args.dedup,
            version=args.version,
            tags=tags,
        )
    a = r.artifact
    outcome = "unchanged" if r.existed else "new version"
    print(f"{a.name}:{a.version} {a.id} {a.digest} ({outcome})")
    print(
        f"rows {r.previous_row_count} + {r.appended_rows} appended = {r.row_count}"
        f" ({r.dropped_duplicates} duplicates dropped)"
    )
    return 0


def cmd_db_upgrade(args) -> int:
    from services.registry.migrations import upgrade_database

    config = _config(args)
    dsn = args.dsn or config.effective_registry_dsn
    config.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(dsn)
    print(f"registry schema at head on {dsn.split('@')[-1]}")
    return 0


def cmd_registry_gc(args) -> int:
    from lorafleet.v1 import registry_pb2

    request = registry_pb2.CollectGarbageRequest(dry_run=args.dry_run)
    if args.min_age_seconds is not None:
        request.min_age_seconds = args.min_age_seconds
    with connect(args, "registry") as client:
        r = client.registry.CollectGarbage(request, timeout=600)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {r.deleted_blobs} blobs ({r.deleted_bytes} bytes) and "
        f"{r.deleted_version_dirs} version directories"
    )
    return 0


def cmd_registry_retain(args) -> int:
    from lorafleet.v1 import registry_pb2

    with connect(args, "registry") as client:
        r = client.registry.ApplyRetention(
            registry_pb2.ApplyRetentionRequest(
                name=args.name, keep_last=args.keep_last, dry_run=args.dry_run
            ),
            timeout=600,
        )
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb}: {' '.join(r.deleted_artifact_ids) or 'nothing'}")
    kept = " ".join(r.kept_artifact_ids) or "-"
    print(f"kept (alias, deployment or lineage): {kept}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorafleet", description=__doc__)
    p.add_argument("--config", help="YAML config file (else LORAFLEET_CONFIG)")
    p.add_argument("--data-dir", help="where state lives (default .lorafleet)")
    # The same two options after the command (`lorafleet up --data-dir X`);
    # SUPPRESS keeps the value given before the command when they are absent.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="YAML config file (else LORAFLEET_CONFIG)",
    )
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="where state lives (default .lorafleet)",
    )
    for parser in (p, common):
        add_credential_options(parser, parser is common)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run one service in the foreground")
    s.add_argument("service", choices=SERVICE_NAMES)
    s.add_argument("rest", nargs=argparse.REMAINDER, help="e.g. --port 0")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser(
        "up",
        parents=[common],
        help="run the whole suite as local processes, restarting any that exit",
        description=(
            "Starts the six services, waits until all are SERVING and keeps them "
            "running: a service that exits is restarted while the others keep "
            "running, after 1s, 2s, 4s ... (--restart-backoff, doubling up to "
            "--restart-backoff-max). "
            "A restart fails when the service exits again before it has been "
            "SERVING for --stable-after seconds; after --max-restarts failed "
            "restarts in a row lorafleet up gives up, stops the whole suite and "
            "exits 1. Ctrl-C or SIGTERM stops everything, gateway first, registry "
            "last. Logs: <data-dir>/logs/<service>.log."
        ),
    )
    s.add_argument(
        "--base-port",
        type=int,
        help="gateway port; others follow (+1..+5, more inference replicas after)",
    )
    s.add_argument(
        "--inference-replicas",
        type=int,
        default=1,
        metavar="N",
        help="run inference as N processes (inference, inference-2, ...; ports "
        "after the others); the gateway routes each model and adapter to one of "
        "them (default 1)",
    )
    s.add_argument(
        "--metrics-base-port",
        type=int,
        default=DEFAULT_METRICS_BASE_PORT,
        metavar="PORT",
        help="Prometheus /metrics of each process on PORT and on (gateway first, "
        f"in the order of the gRPC ports; default {DEFAULT_METRICS_BASE_PORT}); "
        "0 serves none",
    )
    s.add_argument(
        "--auth",
        choices=("disabled", "required"),
        help="auth mode of the suite (default: auth_mode from the environment or "
        "config file, else disabled: local development). required keeps a "
        "service secret in <data-dir>/auth/ unless one is configured",
    )
    s.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        metavar="N",
        help="failed restarts in a row before giving up on a service and stopping "
        "the suite (default 5; 0 = stop the suite when any service exits)",
    )
    s.add_argument(
        "--restart-backoff",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait before the first restart; doubles with each failed one (default 1)",
    )
    s.add_argument(
        "--restart-backoff-max",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="longest wait between restarts (default 30)",
    )
    s.add_argument(
        "--stable-after",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a restarted service SERVING this long counts as recovered: its "
        "restart count and backoff start again (default 60)",
    )
    s.set_defaults(func=cmd_up)

    s = sub.add_parser(
        "demo",
        parents=[common],
        help="train, merge, validate, deploy SmolLM2 on a demo task, then canary "
        "a second version against it",
    )
    s.add_argument("--steps", type=int, default=20, help="training steps (default 20)")
    s.add_argument("--base-port", type=int, help="gateway port; others follow (+1..+5)")
    s.set_defaults(func=cmd_demo)

    add_model_commands(sub, common)

    ds = sub.add_parser("datasets", help="dataset versions").add_subparsers(
        dest="datasets_command", required=True
    )
    s = ds.add_parser(
        "append",
        parents=[common],
        help="append JSONL rows to a dataset, registering a new version",
    )
    s.add_argument("dataset_id", help="id, name:version, name@alias or name")
    s.add_argument("file", help="local JSONL file of rows to append (uploaded)")
    s.add_argument(
        "--dedup", action="store_true", help="leave out rows the dataset holds"
    )
    s.add_argument("--version", type=int, default=0, help="version to create")
    s.add_argument("--tag", action="append", help="KEY=VALUE tag (repeatable)")
    s.add_argument("--registry", help="registry host:port (default from config)")
    s.set_defaults(func=cmd_datasets_append)

    db = sub.add_parser("db", help="registry database").add_subparsers(
        dest="db_command", required=True
    )
    s = db.add_parser(
        "upgrade", parents=[common], help="apply Alembic migrations up to head"
    )
    s.add_argument("--dsn", help="SQLAlchemy URL (default: the configured registry)")
    s.set_defaults(func=cmd_db_upgrade)

    reg = sub.add_parser("registry", help="registry maintenance").add_subparsers(
        dest="registry_command", required=True
    )
    s = reg.add_parser(
        "gc", parents=[common], help="delete stored bytes no version references"
    )
    s.add_argument(
        "--min-age-seconds",
        type=int,
        help="spare blobs touched this recently (default 3600)",
    )
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--registry", help="registry host:port (default from config)")
    s.set_defaults(func=cmd_registry_gc)
    s = reg.add_parser(
        "retain",
        parents=[common],
        help="delete old versions of a name, keeping the newest N",
    )
    s.add_argument("name")
    s.add_argument("--keep-last", type=int, required=True)
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--registry", help="registry host:port (default from config)")
    s.set_defaults(func=cmd_registry_retain)

    add_rollout_commands(sub, common)
    add_deployment_commands(sub, common)
    add_auth_commands(sub, common)
    add_merge_command(sub, common)
    return p


def add_credential_options(parser: argparse.ArgumentParser, after: bool) -> None:
    """--api-key / --token / --project, before or after the command."""
    default = argparse.SUPPRESS if after else None
    parser.add_argument(
        "--api-key",
        default=default,
        help="API key (lfk_...) sent with every call (else LORAFLEET_API_KEY)",
    )
    parser.add_argument(
        "--token",
        default=default,
        help="JWT bearer token from your identity provider (else LORAFLEET_TOKEN)",
    )
    parser.add_argument(
        "--project",
        default=default,
        help="project to act in (else LORAFLEET_PROJECT, else your only one or "
        "'default')",
    )


def main(argv: list[str] | None = None) -> int:
    """Runs one command. A remote error prints ``error: CODE: message`` and
    its details and exits 2, as do bad options and configuration; Ctrl-C
    exits 130; none of them with a traceback."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args) or 0
    except grpc.RpcError as exc:
        return report_rpc_error(exc)
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`lorafleet rollout watch … | head`): stop
        # quietly, as Python's docs advise, instead of a traceback; stdout
        # goes to /dev/null so the interpreter's final flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
