"""API key format: `lfk_<id>_<secret>`, stored only as SHA-256 of the secret.

The id finds the record without scanning; the secret (32 random bytes) is shown
once, at creation. A fast hash is enough for a high-entropy secret (no
dictionary to guess from, unlike a password), and it keeps each check cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from services.common.errors import Unauthenticated, with_reason

PREFIX = "lfk"
_KEY = re.compile(r"^lfk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")


@dataclass(frozen=True)
class KeyParts:
    key_id: str
    secret: str

    @property
    def secret_sha256(self) -> str:
        return hash_secret(self.secret)


def new_key() -> tuple[KeyParts, str]:
    """A fresh key: its parts and the full key text to hand out once."""
    parts = KeyParts(secrets.token_hex(6), secrets.token_urlsafe(32))
    return parts, f"{PREFIX}_{parts.key_id}_{parts.secret}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored_sha256: str, offered_sha256: str) -> bool:
    return hmac.compare_digest(stored_sha256, offered_sha256)


def parse_key(text: str) -> KeyParts:
    match = _KEY.match(text.strip())
    if not match:
        raise with_reason(
            Unauthenticated(
                "the API key is malformed: lorafleet keys look like "
                "lfk_<12 hex>_<secret>; copy it whole from `lorafleet auth keys "
                "create`"
            ),
            "KEY_MALFORMED",
        )
    return KeyParts(match.group(1), match.group(2))


def looks_like_key(text: str) -> bool:
    return text.startswith(f"{PREFIX}_")


@dataclass(frozen=True)
class ApiKeyInfo:
    """What the registry keeps about a key (never its secret)."""

    key_id: str
    name: str
    roles: dict[str, str]
    created_by: str = ""
    create_time: float = 0.0
    expire_time: float | None = None
    revoke_time: float | None = None
    revoked_by: str = ""

    @property
    def subject(self) -> str:
        return f"key:{self.name}"
