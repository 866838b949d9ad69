"""The deadline of the call being served, handed on to the calls it makes.

A service serving a call with 2 s left must not spend 30 s (the default
deadline) on the calls that call causes: the caller is gone by then, and the
work downstream would go on for nobody. The server interceptor records each
call's deadline here while its handler runs; `ServiceClient` gives every
call it makes at most the time that is left (and refuses at once when none
is). Work not caused by a call (job workers, refresh threads) has no deadline
here and keeps the configured default.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from services.common.errors import DeadlineExceeded

_deadline: ContextVar[float | None] = ContextVar("lorafleet_deadline", default=None)

# Deadlines further away than this are "none" (grpc reports no deadline as a
# huge remaining time).
_NO_DEADLINE_S = 10**8


def remaining_s() -> float | None:
    """Seconds left to the call being served (None: no call, or no deadline)."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()


@contextmanager
def serving(time_remaining: float | None) -> Iterator[None]:
    """Records a served call's deadline (grpc's `context.time_remaining()`)
    for the code handling it; restored after, as pool threads are reused."""
    deadline = None
    if time_remaining is not None and time_remaining < _NO_DEADLINE_S:
        deadline = time.monotonic() + time_remaining
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        try:
            _deadline.reset(token)
        except ValueError:  # a stream closed from another thread's context
            _deadline.set(None)


def budget(timeout_s: float, what: str) -> float:
    """The timeout for a call made now: `timeout_s`, or less if the call being
    served ends sooner. DEADLINE_EXCEEDED when it has already ended."""
    left = remaining_s()
    if left is None:
        return timeout_s
    if left <= 0:
        raise DeadlineExceeded(
            f"the deadline of the call being served passed before {what} was called"
        )
    return min(timeout_s, left)
