"""`lorafleet auth keys create|list|revoke`: API keys, from the registry's RPCs
or, to create the first admin key of a suite, straight in its database."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import socket
import sys

from services.cli.deployments import UsageError, connect, connection_parser, locate

ROLE_HELP = (
    "PROJECT=ROLE, repeatable: viewer (read, generate), operator (+ train, merge, "
    "validate, deploy, roll out) or admin (+ keys, retention, GC); PROJECT * = "
    "every project"
)


def _roles(pairs: list[str] | None) -> dict[str, str]:
    roles: dict[str, str] = {}
    for pair in pairs or ():
        project, sep, role = pair.partition("=")
        if not sep or not project or not role:
            raise UsageError(
                f"--role {pair!r} is not PROJECT=ROLE, e.g. default=operator"
            )
        roles[project.strip()] = role.strip()
    if not roles:
        raise UsageError("give the key at least one --role PROJECT=ROLE")
    return roles


def _when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime(
        "%Y-%m-%d %H:%M"
    )


def _describe(key_id, name, roles, created_by, create_s, expire_s, revoke_s) -> str:
    shown = ",".join(f"{p}={r}" for p, r in sorted(roles.items()))
    state = f"revoked {_when(revoke_s)}" if revoke_s else f"expires {_when(expire_s)}"
    return (
        f"{key_id}  {name:<20} {shown:<28} by {created_by or '-'} "
        f"{_when(create_s)}  {state}"
    )


def _direct(args):
    """The suite's registry database, migrated, for --bootstrap/--dsn."""
    from services.registry.db import Database, make_engine
    from services.registry.migrations import upgrade_database

    config, _ = locate(args)
    dsn = args.dsn or config.effective_registry_dsn
    config.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(dsn)
    return Database(make_engine(dsn))


def _operator():
    """Who runs a direct-database command: they have the database, so every
    permission; audit records name them by login and host."""
    from services.common.auth.caller import Caller
    from services.common.auth.permissions import ALL_PROJECTS, SERVICE_ROLE

    who = f"local:{getpass.getuser()}@{socket.gethostname()}"
    return Caller(who, {ALL_PROJECTS: SERVICE_ROLE})


def cmd_keys_create(args) -> int:
    roles = _roles(args.role)
    ttl_s = (args.ttl_days or 0) * 86400.0
    if args.bootstrap or args.dsn:
        from services.common.auth.caller import acting_as
        from services.registry.api_keys import ApiKeys

        db = _direct(args)
        try:
            with acting_as(_operator()):
                info, text = ApiKeys(db).create(args.name, roles, ttl_s)
        finally:
            db.dispose()
        described = _describe(
            info.key_id,
            info.name,
            info.roles,
            info.created_by,
            info.create_time,
            info.expire_time,
            None,
        )
    else:
        from lorafleet.v1 import registry_pb2

        with connect(args, "registry") as client:
            reply = client.registry.CreateApiKey(
                registry_pb2.CreateApiKeyRequest(
                    name=args.name, roles=roles, ttl_seconds=ttl_s
                ),
                timeout=args.timeout,
            )
        k, text = reply.key, reply.secret
        described = _describe(
            k.id,
            k.name,
            dict(k.roles),
            k.created_by,
            k.create_time.ToSeconds(),
            k.expire_time.ToSeconds() if k.HasField("expire_time") else None,
            None,
        )
    print(text)
    print(
        f"created {described}\nthe key above is shown once: store it now (e.g. "
        "export LORAFLEET_API_KEY=...)",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args) -> int:
    from lorafleet.v1 import registry_pb2

    with connect(args, "registry") as client:
        keys = client.registry.ListApiKeys(
            registry_pb2.ListApiKeysRequest(include_revoked=args.all),
            timeout=args.timeout,
        ).keys
    for k in keys:
        print(
            _describe(
                k.id,
                k.name,
                dict(k.roles),
                k.created_by,
                k.create_time.ToSeconds(),
                k.expire_time.ToSeconds() if k.HasField("expire_time") else None,
                k.revoke_time.ToSeconds() if k.HasField("revoke_time") else None,
            )
        )
    if not keys:
        print("no keys" + ("" if args.all else " (--all shows revoked ones)"))
    return 0


def cmd_keys_revoke(args) -> int:
    from lorafleet.v1 import registry_pb2

    key_id = args.id
    if key_id.startswith("lfk_"):
        key_id = key_id.split("_")[1]  # the whole key pasted: its id part
    if args.bootstrap or args.dsn:
        from services.common.auth.caller import acting_as
        from services.registry.api_keys import ApiKeys

        db = _direct(args)
        try:
            with acting_as(_operator()):
                info = ApiKeys(db).revoke(key_id)
        finally:
            db.dispose()
        print(f"revoked {info.key_id} {info.name}")
        return 0
    with connect(args, "registry") as client:
        k = client.registry.RevokeApiKey(
            registry_pb2.RevokeApiKeyRequest(id=key_id), timeout=args.timeout
        ).key
    print(f"revoked {k.id} {k.name} (by {k.revoked_by})")
    return 0


def add_auth_commands(sub, common: argparse.ArgumentParser) -> None:
    auth = sub.add_parser("auth", help="API keys and access").add_subparsers(
        dest="auth_command", required=True
    )
    keys = auth.add_parser("keys", help="create, list and revoke API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    connection = connection_parser()

    direct = argparse.ArgumentParser(add_help=False)
    direct.add_argument(
        "--bootstrap",
        action="store_true",
        help="write to the suite's registry database directly (the data "
        "directory's, or --dsn) instead of calling the registry: for the first "
        "admin key, by whoever runs the database",
    )
    direct.add_argument("--dsn", help="SQLAlchemy URL of the registry database")

    s = keys_sub.add_parser(
        "create",
        parents=[common, connection, direct],
        help="create a key (printed once, on stdout)",
    )
    s.add_argument("--name", required=True, help="what the key is for, e.g. ci")
    s.add_argument("--role", action="append", metavar="PROJECT=ROLE", help=ROLE_HELP)
    s.add_argument(
        "--ttl-days", type=float, help="expire after this many days (default never)"
    )
    s.set_defaults(func=cmd_keys_create)

    s = keys_sub.add_parser(
        "list", parents=[common, connection], help="keys of projects you administer"
    )
    s.add_argument("--all", action="store_true", help="include revoked keys")
    s.set_defaults(func=cmd_keys_list)

    s = keys_sub.add_parser(
        "revoke", parents=[common, connection, direct], help="revoke a key for good"
    )
    s.add_argument("id", help="the key's id (12 hex characters) or the whole key")
    s.set_defaults(func=cmd_keys_revoke)
