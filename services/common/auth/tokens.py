"""Bearer tokens: people's JWTs (PyJWT) and the services' own signed tokens.

A person's JWT comes from the organisation's identity provider: verified
against a shared secret, a public key file or the provider's JWKS, with the
configured issuer and audience, and its roles read from one claim.

A service calling another (the gateway starting a training, the trainer
registering its adapter) sends a short-lived token signed with the suite's
service secret, naming itself and the caller it acts for ("obo"), so the
callee enforces the caller's roles and audits the caller, never the service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from services.common.auth.caller import DEFAULT_PROJECT, Caller
from services.common.auth.permissions import ALL_PROJECTS, SERVICE_ROLE
from services.common.config import Config, ConfigError
from services.common.errors import Unauthenticated, with_reason

INTERNAL_ISSUER = "lorafleet-internal"
INTERNAL_AUDIENCE = "lorafleet-internal"
# Service tokens live this long; each is minted per call, so it only needs to
# outlive one call's trip (clocks between hosts may differ by the leeway).
INTERNAL_TOKEN_S = 300.0
_HMAC = ["HS256", "HS384", "HS512"]
_ASYMMETRIC = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]


def _refused(message: str, reason: str) -> Unauthenticated:
    return with_reason(Unauthenticated(message), reason)


def roles_from_claim(value: Any, default_project: str) -> dict[str, str]:
    """Per-project roles from a token claim.

    Accepts a mapping {"project": "role"}, a list of "project:role" strings
    (the shape IdP group claims take; "*:viewer" for every project), or one
    role name, which applies to the default project.
    """
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, str):
        value = [value]
    roles: dict[str, str] = {}
    for item in value or ():
        project, sep, role = str(item).rpartition(":")
        roles[project if sep else default_project] = role
    return roles


class JwtVerifier:
    """Verifies people's bearer JWTs as configured; None when none is."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._jwks: jwt.PyJWKClient | None = None
        self._key: Any = None
        self.algorithms = list(config.auth_jwt_algorithms)
        if config.auth_jwks_url:
            self._jwks = jwt.PyJWKClient(
                config.auth_jwks_url, cache_keys=True, lifespan=300, timeout=10
            )
            self.algorithms = self.algorithms or _ASYMMETRIC
        elif config.auth_jwt_public_key_file:
            path = Path(config.auth_jwt_public_key_file)
            try:
                self._key = path.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"auth_jwt_public_key_file {path}: cannot read it ({exc})"
                ) from exc
            self.algorithms = self.algorithms or _ASYMMETRIC
        elif config.auth_jwt_secret:
            if len(config.auth_jwt_secret) < 32:
                raise ConfigError(
                    "auth_jwt_secret (LORAFLEET_AUTH_JWT_SECRET) must be at least "
                    "32 characters; a short HMAC secret can be guessed offline"
                )
            self._key = config.auth_jwt_secret
            self.algorithms = self.algorithms or _HMAC

    @property
    def configured(self) -> bool:
        return self._jwks is not None or self._key is not None

    def verify(self, token: str) -> Caller:
        if not self.configured:
            raise _refused(
                "this suite accepts no JWTs (no auth_jwt_secret, "
                "auth_jwt_public_key_file or auth_jwks_url is configured); use an "
                "API key (lfk_...)",
                "JWT_NOT_CONFIGURED",
            )
        config = self.config
        try:
            key = (
                self._jwks.get_signing_key_from_jwt(token).key
                if self._jwks is not None
                else self._key
            )
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=config.auth_jwt_audience or None,
                issuer=config.auth_jwt_issuer or None,
                leeway=config.auth_jwt_leeway_s,
                options={"require": ["exp", config.auth_jwt_subject_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise _refused(
                "the bearer token has expired; get a new one from your identity "
                "provider",
                "TOKEN_EXPIRED",
            ) from None
        except jwt.InvalidSignatureError:
            raise _refused(
                "the bearer token's signature does not verify with this suite's "
                "key; it was signed by another issuer or key",
                "TOKEN_BAD_SIGNATURE",
            ) from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise _refused(
                f"the bearer token was refused: {exc}", "TOKEN_INVALID"
            ) from None
        roles = roles_from_claim(
            claims.get(config.auth_jwt_roles_claim), config.auth_default_project
        )
        subject = f"user:{claims[config.auth_jwt_subject_claim]}"
        return Caller(subject, roles, default_project_of(roles, config))


def default_project_of(roles: Mapping[str, str], config: Config) -> str:
    """The project a request acts in when it names none: the caller's only
    project if it has exactly one, else the configured default."""
    named = [p for p in roles if p != ALL_PROJECTS]
    if len(named) == 1 and ALL_PROJECTS not in roles:
        return named[0]
    return config.auth_default_project or DEFAULT_PROJECT


class ServiceTokens:
    """Mints and verifies the tokens services send each other.

    Minting caches a token per (caller, project) for a fraction of its life,
    so a busy relay signs once per minute rather than once per call.
    """

    def __init__(self, secret: str, service: str) -> None:
        self.secret = secret
        self.service = service
        self._cache: dict[tuple, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def mint(self, caller: Caller | None) -> str:
        now = time.time()
        key = (
            None
            if caller is None
            else (
                caller.subject,
                caller.project,
                caller.key_id,
                tuple(sorted(caller.roles.items())),
            )
        )
        with self._lock:
            cached = self._cache.get(key)
            if cached and cached[0] > now + INTERNAL_TOKEN_S / 2:
                return cached[1]
        claims: dict[str, Any] = {
            "iss": INTERNAL_ISSUER,
            "aud": INTERNAL_AUDIENCE,
            "sub": f"service:{self.service}",
            "iat": int(now),
            "exp": int(now + INTERNAL_TOKEN_S),
        }
        if caller is not None:
            claims["obo"] = caller.to_claims()
        token = jwt.encode(claims, self.secret, algorithm="HS256")
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = (now + INTERNAL_TOKEN_S, token)
        return token

    def verify(self, token: str) -> Caller | None:
        """The caller a service token carries; None if it is not one of ours."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return None
        if header.get("alg") != "HS256" or unverified.get("iss") != INTERNAL_ISSUER:
            return None
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                audience=INTERNAL_AUDIENCE,
                issuer=INTERNAL_ISSUER,
                leeway=30,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _refused(
                "a service token has expired (are the hosts' clocks in step?)",
                "TOKEN_EXPIRED",
            ) from None
        except jwt.InvalidTokenError:
            raise _refused(
                "a service token does not verify: the services do not share one "
                "auth_service_secret (LORAFLEET_AUTH_SERVICE_SECRET)",
                "TOKEN_BAD_SIGNATURE",
            ) from None
        service = str(claims["sub"]).removeprefix("service:")
        if "obo" in claims:
            return Caller.from_claims(claims["obo"], via=service)
        return Caller(
            f"service:{service}", {ALL_PROJECTS: SERVICE_ROLE}, DEFAULT_PROJECT
        )
