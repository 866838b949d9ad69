"""Cheap online quality checks of every answer a deployment gives.

They run on the request path, so they are string checks only: an empty
answer, an answer that does not parse as JSON where the deployment declares
JSON output, an answer containing a blocked phrase, and its length (the
analysis compares an arm's mean length with the stable arm's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Quality:
    empty: bool
    invalid_json: bool
    blocked: bool
    chars: int


def check_output(text: str, output_format: str, blocked_phrases: list[str]) -> Quality:
    stripped = text.strip()
    invalid = False
    if output_format == "json" and stripped:
        try:
            json.loads(stripped)
        except ValueError:
            invalid = True
    lowered = stripped.lower()
    return Quality(
        empty=not stripped,
        invalid_json=invalid or (output_format == "json" and not stripped),
        blocked=any(p.lower() in lowered for p in blocked_phrases if p),
        chars=len(stripped),
    )
