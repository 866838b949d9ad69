"""Validator suites by name: one module each behind `base.Suite`."""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.validator.suites.base import Suite
from services.validator.suites.basic import BasicSuite

SUITES: dict[str, Suite] = {suite.name: suite for suite in (BasicSuite(),)}


def suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}",
            field="suites",
        ) from None
