"""Retrying calls to a service that went away, within a configured patience.

Services restart (a crash, a deploy, `lorafleet up` bringing one back): a
caller that can safely repeat its call waits with exponential backoff and
tries again for up to `dependency_patience_s`, logging the outage and the
recovery, instead of failing the work it is doing. Only "the service is
unreachable" is retried; a refusal (INVALID_ARGUMENT, NOT_FOUND...) is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common.errors import (
    Cancelled,
    DeadlineExceeded,
    LorafleetError,
    Unavailable,
)

log = logging.getLogger(__name__)


def disconnected(exc: BaseException) -> bool:
    """True for failures that mean "the service went away", not "it refused"."""
    if isinstance(exc, (Unavailable, DeadlineExceeded)):
        return True
    # A server shutting down cancels the streams it serves.
    return isinstance(exc, Cancelled) and bool(getattr(exc, "remote", ""))


@dataclass
class Patience:
    """How long, and how, to keep trying a service that went away."""

    limit_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    first_delay_s: float = 0.5
    max_delay_s: float = 10.0
    # Appended to the give-up message: what the user can do next.
    hint: str = ""


class Reconnect:
    """Backoff bookkeeping for one outage of one service."""

    def __init__(self, patience: Patience, service: str, what: str) -> None:
        self._patience = patience
        self._service = service
        self._what = what
        self._since: float | None = None
        self._tries = 0

    def recovered(self) -> None:
        if self._since is not None:
            log.info("%s is back; %s continues", self._service, self._what)
        self._since, self._tries = None, 0

    def wait_or_give_up(self, exc: LorafleetError) -> None:
        """Waits before the next try; raises UNAVAILABLE once patience ran out."""
        p = self._patience
        now = p.clock()
        if self._since is None:
            self._since = now
            log.info(
                "%s went away (%s); %s reconnects for up to %.0f s",
                self._service,
                exc.message,
                self._what,
                p.limit_s,
            )
        if now - self._since >= p.limit_s:
            raise Unavailable(
                f"{self._service} has been unreachable for {now - self._since:.0f} s "
                f"while {self._what} ({exc.message}); start {self._service} "
                f"again{p.hint}"
            )
        delay = min(p.max_delay_s, p.first_delay_s * 2**self._tries)
        self._tries += 1
        log.info(
            "reconnecting to %s in %.1f s (try %d) for %s",
            self._service,
            delay,
            self._tries,
            self._what,
        )
        p.sleep(delay)


def call(patience: Patience, service: str, what: str, fn: Callable[[], Any]) -> Any:
    """`fn()`, retried while `service` is unreachable (within patience).

    Only for calls that are safe to repeat: reads, Start calls with a
    request id, setting an alias, a deploy that checks what it would change.
    """
    outage = Reconnect(patience, service, what)
    while True:
        try:
            result = fn()
        except LorafleetError as exc:
            if not disconnected(exc):
                raise
            outage.wait_or_give_up(exc)
            continue
        outage.recovered()
        return result


class Patient:
    """A service client whose calls wait out the service's outages.

    For work that runs in the background (a job) and whose calls are safe to
    repeat: reads, registrations (the registry returns the existing version
    for identical content), calls carrying a request id.
    """

    def __init__(self, client: Any, service: str, patience: Patience) -> None:
        self._client = client
        self._service = service
        self._patience = patience

    def __getattr__(self, method: str):
        target = getattr(self._client, method)
        what = f"calling {self._service}.{method}"
        return lambda *args, **kw: call(
            self._patience, self._service, what, lambda: target(*args, **kw)
        )
