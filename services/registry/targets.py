"""A deployment's targets (arms): which versions serve, by which weights.

One STABLE target serves by default (rollbacks return to it); CANDIDATE
targets share the routed traffic with it (a canary, the arms of an A/B test);
a SHADOW target receives a mirrored share and never answers callers; a
STANDBY target stays loaded for an instant rollback (blue-green). Weights are
basis points: the STABLE and CANDIDATE weights sum to 10000.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from services.common.errors import InvalidArgument, shorten

ROLES = ("stable", "candidate", "shadow", "standby")
ROUTED = ("stable", "candidate")
FULL_WEIGHT = 10_000
MAX_TARGETS = 8
ARM_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass
class Target:
    model_id: str
    adapter_id: str = ""
    weight_bps: int = 0
    arm: str = ""
    role: str = "stable"
    mirror_bps: int = 0
    # Filled in by the registry: the serving artifact's digest.
    digest: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> Target:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def single(model_id: str, adapter_id: str) -> list[Target]:
    """The targets of a deployment written the old way: one, taking it all."""
    return [Target(model_id, adapter_id, FULL_WEIGHT, "stable", "stable")]


def check_targets(targets: list[Target]) -> None:
    """Refuses a set of targets that could not be routed as written."""
    if not targets:
        raise InvalidArgument("targets: give at least one target", field="targets")
    if len(targets) > MAX_TARGETS:
        raise InvalidArgument(
            f"targets: at most {MAX_TARGETS} targets, got {len(targets)}",
            field="targets",
        )
    arms: set[str] = set()
    for i, t in enumerate(targets):
        where = f"targets[{i}]"
        if t.role not in ROLES:
            raise InvalidArgument(
                f"{where}.role is unset or unknown; use one of "
                f"{', '.join(r.upper() for r in ROLES)}",
                field=f"{where}.role",
            )
        if not t.model_id:
            raise InvalidArgument(f"{where}.model_id is required", field=where)
        if not ARM_RE.match(t.arm):
            raise InvalidArgument(
                f"{where}.arm {shorten(t.arm)!r} must match {ARM_RE.pattern}",
                field=f"{where}.arm",
            )
        if t.arm in arms:
            raise InvalidArgument(
                f"{where}.arm {t.arm!r} is used twice; arms name targets uniquely",
                field=f"{where}.arm",
            )
        arms.add(t.arm)
        _check_weights(t, where)
    stable = [t for t in targets if t.role == "stable"]
    if len(stable) != 1:
        raise InvalidArgument(
            f"targets: exactly one STABLE target is needed (the version "
            f"rollbacks return to), got {len(stable)}",
            field="targets",
        )
    total = sum(t.weight_bps for t in targets if t.role in ROUTED)
    if total != FULL_WEIGHT:
        raise InvalidArgument(
            f"targets: the STABLE and CANDIDATE weights sum to {total} basis "
            f"points; they must sum to {FULL_WEIGHT} (100%)",
            field="targets",
        )


def _check_weights(t: Target, where: str) -> None:
    if t.role in ROUTED:
        if not 0 <= t.weight_bps <= FULL_WEIGHT:
            raise InvalidArgument(
                f"{where}.weight_bps must be in [0, {FULL_WEIGHT}], got {t.weight_bps}",
                field=f"{where}.weight_bps",
            )
        if t.mirror_bps:
            raise InvalidArgument(
                f"{where}.mirror_bps is for SHADOW targets only",
                field=f"{where}.mirror_bps",
            )
        return
    if t.weight_bps:
        raise InvalidArgument(
            f"{where}.weight_bps must be 0 for a {t.role.upper()} target (it "
            "takes no routed traffic)",
            field=f"{where}.weight_bps",
        )
    if t.role == "shadow" and not 0 < t.mirror_bps <= FULL_WEIGHT:
        raise InvalidArgument(
            f"{where}.mirror_bps must be in (0, {FULL_WEIGHT}] for a SHADOW "
            f"target, got {t.mirror_bps}",
            field=f"{where}.mirror_bps",
        )
    if t.role == "standby" and t.mirror_bps:
        raise InvalidArgument(
            f"{where}.mirror_bps is for SHADOW targets only",
            field=f"{where}.mirror_bps",
        )


def stable_of(targets: list[Target]) -> Target:
    return next(t for t in targets if t.role == "stable")


OUTPUT_FORMATS = ("", "json")
MAX_BLOCKED_PHRASES = 64


def check_quality_settings(output_format: str, phrases: list[str]) -> list[str]:
    """The deployment's online-check settings, checked; the phrases tidied."""
    if output_format not in OUTPUT_FORMATS:
        raise InvalidArgument(
            f"output_format {shorten(output_format)!r} is unknown; use 'json' or "
            "leave it empty for free text",
            field="output_format",
        )
    tidy = [p.strip() for p in phrases]
    if len(tidy) > MAX_BLOCKED_PHRASES or any(not p or len(p) > 200 for p in tidy):
        raise InvalidArgument(
            f"blocked_phrases: at most {MAX_BLOCKED_PHRASES} phrases of 1 to 200 "
            "characters",
            field="blocked_phrases",
        )
    return tidy
