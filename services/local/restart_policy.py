"""When `lorafleet up` restarts a service that exited, and when it gives up on it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Exponential backoff with a crash-loop limit, shared by every service.

    The n-th restart in a row waits ``initial_backoff_s * 2**(n-1)`` seconds, at
    most ``max_backoff_s``: a service that dies because something it needs is
    briefly missing gets a quick retry, one that keeps dying does not burn a
    core importing torch over and over. A restart has failed when the new
    process exits before it has been SERVING for ``stable_after_s``; after
    ``max_restarts`` failed restarts in a row the service is in a crash loop
    that waiting will not fix, so the supervisor gives up. Staying SERVING for
    ``stable_after_s`` ends a streak: the next exit is restart 1 again.
    ``max_restarts=0`` gives up at the first exit.
    """

    max_restarts: int = 5
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    stable_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("restart backoff must be >= 0 seconds")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"max restart backoff ({self.max_backoff_s:g}s) is below the "
                f"initial backoff ({self.initial_backoff_s:g}s)"
            )
        if self.stable_after_s < 0:
            raise ValueError("stable_after_s must be >= 0 seconds")

    def delay_s(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based) of a streak."""
        return min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))


@dataclass(frozen=True)
class RestartDecision:
    """What to do about one exit: restart after ``delay_s``, or give up.

    ``exits`` counts the exits of the current streak (this one included), so
    ``attempt`` (the restart about to happen) equals ``exits``.
    """

    restart: bool
    attempt: int
    delay_s: float
    exits: int


class RestartTracker:
    """The restart history of one service; pure, driven by the times it is given.

    The supervisor reports ``started``/``serving``/``exited`` with its clock's
    reading, so tests replay any history without processes or sleeping.
    """

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self.exits = 0  # exits since the service last stayed up long enough
        self.serving_since: float | None = None

    def started(self, now: float) -> None:
        """A new process was started; it is not SERVING yet."""
        self.serving_since = None

    def serving(self, now: float) -> None:
        """The current process answered SERVING (the first time counts)."""
        if self.serving_since is None:
            self.serving_since = now

    def settle(self, now: float) -> bool:
        """Ends the streak if the process has stayed SERVING long enough.

        Returns True when this call reset a non-empty streak, so the caller
        can say so once.
        """
        if (
            self.exits
            and self.serving_since is not None
            and now - self.serving_since >= self.policy.stable_after_s
        ):
            self.exits = 0
            return True
        return False

    def exited(self, now: float) -> RestartDecision:
        """The current process exited (any code or signal): restart or give up."""
        self.settle(now)
        self.serving_since = None
        self.exits += 1
        attempt = self.exits
        if attempt > self.policy.max_restarts:
            return RestartDecision(False, attempt, 0.0, self.exits)
        return RestartDecision(True, attempt, self.policy.delay_s(attempt), self.exits)
