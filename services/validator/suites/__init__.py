"""Validator suites by name: one module each behind `base.Suite`.

A new dimension is a module with a `Suite` subclass, added here; its
default weight joins `report.DEFAULT_WEIGHTS`.
"""

from __future__ import annotations

from services.common.errors import InvalidArgument
from services.validator.suites.base import Suite
from services.validator.suites.basic import BasicSuite
from services.validator.suites.performance import PerformanceSuite
from services.validator.suites.safety import SafetySuite
from services.validator.suites.task import TaskSuite

SUITES: dict[str, Suite] = {
    s.name: s for s in (BasicSuite(), TaskSuite(), SafetySuite(), PerformanceSuite())
}


def suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise InvalidArgument(
            f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}",
            field="suites",
        ) from None
