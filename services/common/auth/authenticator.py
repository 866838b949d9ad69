"""Turns a call's metadata into a Caller: API keys, JWTs, service tokens.

Services other than the registry check API keys by asking the registry (which
holds their hashes) and keep a verified key for `auth_key_cache_s`, so a
revoked key stops working everywhere within that time while a burst of calls
costs one registry round trip.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from services.common.auth.caller import ANONYMOUS, Caller
from services.common.auth.keys import ApiKeyInfo, KeyParts, looks_like_key, parse_key
from services.common.auth.tokens import JwtVerifier, ServiceTokens, default_project_of
from services.common.config import Config, ConfigError
from services.common.errors import InvalidArgument, Unauthenticated, with_reason

AUTHORIZATION = "authorization"
PROJECT_HEADER = "lorafleet-project"
AUTH_MODES = ("required", "disabled")
_PROJECT_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")

# (key id, sha256 of the secret) -> the key's record, or Unauthenticated.
KeyLookup = Callable[[str, str], ApiKeyInfo]


def check_auth_config(config: Config) -> None:
    """Refuses a start-up configuration that would leave auth half set."""
    if config.auth_mode not in AUTH_MODES:
        raise ConfigError(
            f"auth_mode must be one of {', '.join(AUTH_MODES)}, got "
            f"{config.auth_mode!r} (LORAFLEET_AUTH_MODE)"
        )
    if config.auth_mode == "required" and len(config.auth_service_secret) < 32:
        raise ConfigError(
            "auth_mode required needs auth_service_secret "
            "(LORAFLEET_AUTH_SERVICE_SECRET): one random string of at least 32 "
            'characters shared by every service, e.g. from `python -c "import '
            'secrets; print(secrets.token_urlsafe(32))"`; or set '
            "LORAFLEET_AUTH_MODE=disabled for local development"
        )


def check_project_name(project: str) -> str:
    if not project or len(project) > 64 or set(project) - _PROJECT_CHARS:
        raise InvalidArgument(
            f"project {project[:80]!r} is not a project name: use 1-64 lower-case "
            "letters, digits, '-', '_' or '.'",
            field="project",
        )
    return project


class Authenticator:
    def __init__(
        self, config: Config, service: str, key_lookup: KeyLookup | None = None
    ) -> None:
        check_auth_config(config)
        self.config = config
        self.required = config.auth_mode == "required"
        self.jwt = JwtVerifier(config)
        self.service_tokens = (
            ServiceTokens(config.auth_service_secret, service)
            if config.auth_service_secret
            else None
        )
        self.key_lookup = key_lookup
        self._keys: dict[tuple[str, str], tuple[float, ApiKeyInfo]] = {}
        self._lock = threading.Lock()

    def authenticate(self, metadata: Iterable[tuple[str, str]]) -> Caller:
        headers: dict[str, str] = {}
        for key, value in metadata or ():
            if key in (AUTHORIZATION, PROJECT_HEADER) and isinstance(value, str):
                headers.setdefault(key, value)
        project = headers.get(PROJECT_HEADER, "").strip()
        if project:
            check_project_name(project)
        if not self.required:
            return ANONYMOUS.in_project(project) if project else ANONYMOUS
        raw = headers.get(AUTHORIZATION, "")
        scheme, _, token = raw.partition(" ")
        token = token.strip()
        if not raw:
            raise with_reason(
                Unauthenticated(
                    "this call needs credentials: send the metadata "
                    "`authorization: Bearer <API key or JWT>` (the lorafleet CLI "
                    "reads --api-key or LORAFLEET_API_KEY; Client(api_key=...))"
                ),
                "CREDENTIALS_MISSING",
            )
        if scheme.lower() != "bearer" or not token:
            raise with_reason(
                Unauthenticated(
                    "the authorization metadata must be `Bearer <API key or JWT>`"
                ),
                "CREDENTIALS_MALFORMED",
            )
        if looks_like_key(token):
            caller = self._by_key(parse_key(token))
        else:
            relayed = self.service_tokens.verify(token) if self.service_tokens else None
            if relayed is not None:
                return relayed  # its project travelled inside the signed token
            caller = self.jwt.verify(token)
        return caller.in_project(project) if project else caller

    def _by_key(self, parts: KeyParts) -> Caller:
        if self.key_lookup is None:
            raise Unauthenticated("this service cannot check API keys")
        cache_key = (parts.key_id, parts.secret_sha256)
        now = time.monotonic()
        with self._lock:
            cached = self._keys.get(cache_key)
        if cached and cached[0] > now:
            info = cached[1]
        else:
            info = self.key_lookup(parts.key_id, parts.secret_sha256)
            with self._lock:
                if len(self._keys) > 10000:
                    self._keys.clear()
                self._keys[cache_key] = (now + self.config.auth_key_cache_s, info)
        if info.expire_time is not None and info.expire_time <= time.time():
            raise with_reason(
                Unauthenticated(
                    f"API key {info.name!r} ({info.key_id}) expired; an admin can "
                    "create a new one with `lorafleet auth keys create`"
                ),
                "KEY_EXPIRED",
            )
        return Caller(
            info.subject,
            dict(info.roles),
            default_project_of(info.roles, self.config),
            key_id=info.key_id,
        )
