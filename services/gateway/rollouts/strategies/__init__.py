"""Rollout strategies as plug-ins: one class per file, listed in STRATEGIES.

Adding a strategy is one new file with a `Strategy` subclass and one line
here (and, for the contract, its settings message in gateway.proto).
"""

from __future__ import annotations

from services.common.errors import InvalidArgument, shorten
from services.gateway.rollouts.strategies.ab_test import AbTest
from services.gateway.rollouts.strategies.base import Strategy
from services.gateway.rollouts.strategies.blue_green import BlueGreen
from services.gateway.rollouts.strategies.canary import Canary
from services.gateway.rollouts.strategies.replace import Replace
from services.gateway.rollouts.strategies.shadow import Shadow

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Replace, BlueGreen, Canary, AbTest, Shadow)
}


def get(name: str, field: str = "settings.strategy") -> Strategy:
    """The strategy called `name`; unknown names list the valid ones."""
    try:
        return STRATEGIES[name]()
    except KeyError:
        valid = ", ".join(f"{n} ({c.summary})" for n, c in STRATEGIES.items())
        raise InvalidArgument(
            f"unknown rollout strategy {shorten(name)!r}; known strategies: {valid}",
            field=field,
        ) from None


__all__ = ["STRATEGIES", "Strategy", "get"]
