"""The authenticated caller of the request being served, as domain code sees it.

The auth interceptor sets it for each call; jobs store it when they are
submitted and act as it when they run (in whichever replica, after restarts),
so every record a job writes names the person or key that started it. Domain
code asks `current_caller()`; it never reads gRPC metadata.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.common.auth.permissions import (
    ALL_PROJECTS,
    ROLES,
    SERVICE_PERMISSIONS,
    SERVICE_ROLE,
    roles_granting,
)
from services.common.errors import PermissionDenied, with_reason

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class Caller:
    """Who is calling, their roles per project, and the project they act in.

    `subject` is what audit records name: "key:<name>" for an API key,
    "user:<sub>" for a JWT, "service:<name>" for a service on its own account,
    "anonymous" when auth is disabled. `via` is the service that relayed the
    call on the caller's behalf (the gateway, a job's service).
    """

    subject: str
    roles: Mapping[str, str] = field(default_factory=dict)
    project: str = DEFAULT_PROJECT
    key_id: str = ""
    via: str = ""

    @property
    def display(self) -> str:
        return f"{self.subject} via {self.via}" if self.via else self.subject

    def role_in(self, project: str) -> str:
        return self.roles.get(project) or self.roles.get(ALL_PROJECTS, "")

    def permissions_in(self, project: str) -> frozenset[str]:
        role = self.role_in(project)
        if role == SERVICE_ROLE:
            return SERVICE_PERMISSIONS
        return ROLES.get(role, frozenset())

    def can(self, permission: str, project: str | None = None) -> bool:
        return permission in self.permissions_in(project or self.project)

    def projects_with(self, permission: str) -> set[str] | None:
        """Projects where the caller has `permission`; None = every project."""
        if permission in self.permissions_in(ALL_PROJECTS) and ALL_PROJECTS in (
            self.roles
        ):
            return None
        return {p for p in self.roles if p != ALL_PROJECTS and self.can(permission, p)}

    def require(
        self, permission: str, project: str | None = None, what: str = ""
    ) -> None:
        """Raises PERMISSION_DENIED naming the missing permission unless granted."""
        project = project or self.project
        if self.can(permission, project):
            return
        role = self.role_in(project)
        held = f"has role {role}" if role else "has no role"
        grants = " or ".join(roles_granting(permission)) or "no role"
        subject = f"{what}: " if what else ""
        raise with_reason(
            PermissionDenied(
                f"{subject}needs permission {permission!r} in project {project!r}; "
                f"{self.display} {held} there ({grants} grants it; an admin of "
                f"the project can grant it with `lorafleet auth keys create`)"
            ),
            "PERMISSION_MISSING",
            permission=permission,
            project=project,
            subject=self.subject,
        )

    def in_project(self, project: str) -> Caller:
        return Caller(self.subject, self.roles, project, self.key_id, self.via)

    def relayed_by(self, service: str) -> Caller:
        return Caller(self.subject, self.roles, self.project, self.key_id, service)

    def to_claims(self) -> dict[str, Any]:
        return {
            "sub": self.subject,
            "roles": dict(self.roles),
            "project": self.project,
            "key_id": self.key_id,
        }

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], via: str = "") -> Caller:
        roles = claims.get("roles") or {}
        return cls(
            subject=str(claims.get("sub") or "unknown"),
            roles={str(k): str(v) for k, v in dict(roles).items()},
            project=str(claims.get("project") or DEFAULT_PROJECT),
            key_id=str(claims.get("key_id") or ""),
            via=via,
        )


# With auth disabled every caller is this one, with every permission.
ANONYMOUS = Caller("anonymous", {ALL_PROJECTS: SERVICE_ROLE})
# Work no request caused (start-up recovery, jobs from before auth existed).
SYSTEM = Caller("system", {ALL_PROJECTS: SERVICE_ROLE})

_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "lorafleet_caller", default=None
)


def current_caller() -> Caller:
    """The caller being served; SYSTEM outside any request or job."""
    return _current.get() or SYSTEM


def caller_or_none() -> Caller | None:
    return _current.get()


@contextlib.contextmanager
def acting_as(caller: Caller | None) -> Iterator[None]:
    """Runs the block as `caller` (None: as nobody, i.e. SYSTEM)."""
    token = _current.set(caller)
    try:
        yield
    finally:
        _current.reset(token)


def require(permission: str, project: str, what: str = "") -> None:
    """`current_caller().require(...)`, for domain code checking an object's project."""
    current_caller().require(permission, project, what)
