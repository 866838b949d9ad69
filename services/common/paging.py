"""Opaque page tokens for List RPCs (Google AIP-158 style)."""

from __future__ import annotations

import base64
import binascii
import json

from services.common.errors import InvalidArgument, shorten

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(
            f"page_size must be >= 0, got {requested}", field="page_size"
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(offset: int, scope: str) -> str:
    raw = json.dumps({"o": offset, "s": scope}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, scope: str) -> int:
    """Returns the offset in `token`; a token from another listing is refused."""
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, token_scope = int(data["o"]), data["s"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            f"page_token {shorten(token)!r} is malformed; pass the next_page_token "
            "of the previous response unchanged",
            field="page_token",
        ) from exc
    if token_scope != scope or offset < 0:
        raise InvalidArgument(
            f"page_token {shorten(token)!r} belongs to a different listing or "
            "filter; start again without a page_token",
            field="page_token",
        )
    return offset


def paginate(items: list, size: int, token: str, scope: str) -> tuple[list, str]:
    """Slices an already-ordered list; returns the page and the next token."""
    size = page_size(size)
    start = decode_token(token, scope)
    page = items[start : start + size]
    nxt = encode_token(start + size, scope) if start + size < len(items) else ""
    return page, nxt
