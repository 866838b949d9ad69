"""API keys: created by admins, shown once, stored as SHA-256, revoked for good.

An admin of some projects may create and revoke keys with roles in those
projects only; "*" (every project) takes an admin of every project. Key
management and key checks are audited like any other mutation.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.auth.authenticator import check_project_name
from services.common.auth.caller import current_caller
from services.common.auth.keys import ApiKeyInfo, new_key, secret_matches
from services.common.auth.permissions import ADMIN, ALL_PROJECTS, ROLES
from services.common.errors import (
    InvalidArgument,
    NotFound,
    Unauthenticated,
    shorten,
    with_reason,
)
from services.registry.db import ApiKeyRow, Database, as_utc, audit, utcnow


def _info(row: ApiKeyRow) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=row.id,
        name=row.name,
        roles=dict(row.roles or {}),
        created_by=row.created_by,
        create_time=as_utc(row.create_time).timestamp(),
        expire_time=as_utc(row.expire_time).timestamp() if row.expire_time else None,
        revoke_time=as_utc(row.revoke_time).timestamp() if row.revoke_time else None,
        revoked_by=row.revoked_by or "",
    )


def check_roles(roles: dict[str, str]) -> dict[str, str]:
    if not roles:
        raise InvalidArgument(
            "roles is required: give the key a role per project, e.g. "
            '{"default": "operator"} (--role default=operator)',
            field="roles",
        )
    for project, role in roles.items():
        if project != ALL_PROJECTS:
            check_project_name(project)
        if role not in ROLES:
            raise InvalidArgument(
                f"roles[{shorten(project)}]: unknown role {shorten(role)!r}; "
                f"choose one of {', '.join(ROLES)}",
                field=f"roles[{project}]",
            )
    return dict(roles)


class ApiKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        roles: dict[str, str],
        ttl_s: float = 0.0,
        *,
        trace_id: str = "",
    ) -> tuple[ApiKeyInfo, str]:
        """A new key and its full text (shown once)."""
        name = name.strip()
        if not name or len(name) > 128:
            raise InvalidArgument(
                "name is required (1-128 characters): say what the key is for, "
                "e.g. 'ci-pipeline'",
                field="name",
            )
        if ttl_s < 0:
            raise InvalidArgument(
                f"ttl_seconds must be >= 0 (0 = never expires), got {ttl_s}",
                field="ttl_seconds",
            )
        roles = check_roles(roles)
        caller = current_caller()
        for project in roles:
            caller.require(ADMIN, project, f"a key with a role in project {project!r}")
        parts, text = new_key()

        def work(session: Session) -> ApiKeyInfo:
            now = utcnow()
            row = ApiKeyRow(
                id=parts.key_id,
                name=name,
                secret_sha256=parts.secret_sha256,
                roles=roles,
                created_by=caller.display[:256],
                create_time=now,
                expire_time=now + dt.timedelta(seconds=ttl_s) if ttl_s else None,
                revoke_time=None,
                revoked_by="",
            )
            session.add(row)
            audit(
                session,
                principal=caller.display,
                action="apikey.create",
                target=f"key:{parts.key_id}",
                after={"name": name, "roles": roles, "ttl_seconds": ttl_s},
                trace_id=trace_id,
            )
            session.flush()
            return _info(row)

        return self.db.write(work), text

    def list(self, include_revoked: bool = False) -> list[ApiKeyInfo]:
        """Keys whose every project the caller administers, newest first."""
        caller = current_caller()

        def work(session: Session) -> list[ApiKeyInfo]:
            query = select(ApiKeyRow).order_by(ApiKeyRow.create_time.desc())
            if not include_revoked:
                query = query.where(ApiKeyRow.revoke_time.is_(None))
            return [
                _info(r)
                for r in session.scalars(query)
                if all(caller.can(ADMIN, p) for p in (r.roles or {}))
            ]

        return self.db.read(work)

    def revoke(self, key_id: str, *, trace_id: str = "") -> ApiKeyInfo:
        caller = current_caller()

        def work(session: Session) -> ApiKeyInfo:
            row = session.get(ApiKeyRow, key_id) if key_id else None
            if row is None:
                raise NotFound(
                    f"no API key has id {shorten(key_id)!r} (the 12 hex characters "
                    "after lfk_; `lorafleet auth keys list` shows them)",
                    field="id",
                )
            for project in row.roles or {}:
                caller.require(ADMIN, project, f"key {row.name!r}")
            if row.revoke_time is None:
                row.revoke_time = utcnow()
                row.revoked_by = caller.display[:256]
                audit(
                    session,
                    principal=caller.display,
                    action="apikey.revoke",
                    target=f"key:{row.id}",
                    before={"name": row.name, "roles": dict(row.roles or {})},
                    after={"revoked": True},
                    trace_id=trace_id,
                )
                session.flush()
            return _info(row)

        return self.db.write(work)

    def authenticate(self, key_id: str, secret_sha256: str) -> ApiKeyInfo:
        """The key's record if the secret matches and it is live, else
        UNAUTHENTICATED (saying why, never which part of a wrong key was wrong)."""
        row = self.db.read(lambda s: s.get(ApiKeyRow, key_id))
        if row is None or not secret_matches(row.secret_sha256, secret_sha256):
            raise with_reason(
                Unauthenticated(
                    "the API key is not valid: check that it was copied whole, or "
                    "ask an admin for one (`lorafleet auth keys create`)"
                ),
                "KEY_INVALID",
            )
        if row.revoke_time is not None:
            raise with_reason(
                Unauthenticated(
                    f"API key {row.name!r} ({row.id}) was revoked by "
                    f"{row.revoked_by or 'an admin'}; ask an admin for a new one"
                ),
                "KEY_REVOKED",
            )
        return _info(row)
