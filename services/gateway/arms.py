"""Choosing the arm of a deployment that serves one request.

Weights are basis points (10000 = 100%). A request with a routing key (a user
id, say) lands on a point of [0, 10000) given by a hash of the deployment and
the key, so the same key reaches the same arm on every gateway replica and
after every restart: no shared state beyond the deployment's weights. The
candidate arms take the low end of the range and the stable arm the rest, so
raising a canary's weight (5% -> 25%) only moves keys from stable into the
canary, never out of it. A request without a key lands on a uniformly random
point, which makes the split exact in distribution.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from lorafleet.v1 import common_pb2
from services.common.errors import InvalidArgument, NotFound, shorten

FULL_WEIGHT = 10_000
# Routers use a cached deployment for TTL_S, then while one background read
# refreshes it, up to MAX_STALE_S (services.gateway.routing.Router).
TTL_S, MAX_STALE_S = 1.0, 2.0
MAX_ROUTING_KEY_BYTES = 256
ROUTED_ROLES = (common_pb2.TARGET_ROLE_STABLE, common_pb2.TARGET_ROLE_CANDIDATE)


@dataclass(frozen=True)
class Arm:
    """One target of a deployment, as the router uses it."""

    name: str
    model_id: str
    adapter_id: str
    digest: str
    weight_bps: int
    role: int  # lorafleet.v1.TargetRole
    mirror_bps: int = 0  # SHADOW arms: the share of requests copied to them

    @property
    def shadow(self) -> bool:
        return self.role == common_pb2.TARGET_ROLE_SHADOW


def arms_of(deployment: Any) -> list[Arm]:
    """The arms of a lorafleet.v1.Deployment (one stable arm if it has no
    targets, as a deployment written before targets existed)."""
    if not deployment.targets:
        return [
            Arm(
                "stable",
                deployment.model_id,
                deployment.adapter_id,
                "",
                FULL_WEIGHT,
                common_pb2.TARGET_ROLE_STABLE,
            )
        ]
    return [
        Arm(
            t.arm,
            t.model_id,
            t.adapter_id,
            t.digest,
            t.weight_bps,
            t.role,
            t.mirror_bps,
        )
        for t in deployment.targets
    ]


def routing_order(arms: list[Arm]) -> list[Arm]:
    """Routed arms in the order they take the range: candidates (by name), then
    stable, which therefore only gives up range as candidates grow."""
    candidates = sorted(
        (a for a in arms if a.role == common_pb2.TARGET_ROLE_CANDIDATE),
        key=lambda a: a.name,
    )
    stable = [a for a in arms if a.role == common_pb2.TARGET_ROLE_STABLE]
    return candidates + stable


def key_point(deployment: str, routing_key: str) -> int:
    """Where a routing key lands in [0, 10000), the same in every process."""
    digest = hashlib.sha256(f"{deployment}\0{routing_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % FULL_WEIGHT


def check_routing_key(routing_key: str) -> None:
    if len(routing_key.encode()) > MAX_ROUTING_KEY_BYTES:
        raise InvalidArgument(
            f"routing_key {shorten(routing_key)!r} is "
            f"{len(routing_key.encode())} bytes; at most "
            f"{MAX_ROUTING_KEY_BYTES} (use a user or session id, or a hash of one)",
            field="routing_key",
        )


class ArmChooser:
    """Picks arms by weight; `rng` is injectable so tests are reproducible."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()

    def choose(
        self,
        deployment: str,
        arms: list[Arm],
        *,
        routing_key: str = "",
        forced_arm: str = "",
    ) -> Arm:
        if forced_arm:
            for arm in arms:
                if arm.name == forced_arm:
                    return arm
            raise NotFound(
                f"deployment {deployment!r} has no arm {shorten(forced_arm)!r}; "
                f"its arms are {', '.join(a.name for a in arms)}",
                field="x-lorafleet-arm",
            )
        check_routing_key(routing_key)
        point = (
            key_point(deployment, routing_key)
            if routing_key
            else self._rng.randrange(FULL_WEIGHT)
        )
        ordered = routing_order(arms)
        edge = 0
        for arm in ordered:
            edge += arm.weight_bps
            if point < edge:
                return arm
        return ordered[-1]  # weights not summing to 100% (refused at write)
