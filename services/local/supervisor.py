"""`lorafleet up`'s supervisor: restarts services that exit, gives up on crash loops."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.local.launcher import LocalSuite, check_health, describe_exit
from services.local.restart_policy import RestartDecision, RestartPolicy, RestartTracker


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def _stdout(message: str) -> None:
    print(message, flush=True)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class _Watch:
    """What the supervisor knows about one service between polls."""

    tracker: RestartTracker
    started_at: float
    serving: bool = False
    restart_at: float | None = None  # set while waiting out a backoff
    last_exit: str = ""


class Supervisor:
    """Runs a LocalSuite until asked to stop, restarting services that exit.

    A service that exits, for whatever reason and with whatever code, is
    restarted after the policy's backoff while the others keep running. A
    service in a crash loop (``policy.max_restarts`` failed restarts in a row)
    makes the supervisor stop the whole suite and return 1: every service is
    needed (without the registry nothing resolves, without the trainer no
    workflow finishes), so a partial suite would only fail requests later and
    further from the cause. A service that exits during the first start is not
    restarted either: that is a configuration problem, reported at once.

    ``start_timeout_s`` bounds the first start and each restart: a restarted
    process not SERVING by then is killed, which counts as a failed restart.
    Time comes from ``clock`` and ``wait(seconds) -> stop requested?`` (e.g.
    ``threading.Event.wait``), so tests drive a fake clock instead of sleeping.
    """

    def __init__(
        self,
        suite: LocalSuite,
        policy: RestartPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] = _sleep,
        say: Callable[[str], None] = _stdout,
        warn: Callable[[str], None] = _stderr,
        poll_s: float = 0.5,
        start_timeout_s: float = 180.0,
        tail_lines: int = 10,
        on_serving: Callable[[], None] | None = None,
        on_stopped: Callable[[], None] | None = None,
    ) -> None:
        self.suite = suite
        self.policy = policy
        self.clock, self.wait = clock, wait
        self.say, self.warn = say, warn
        self.poll_s = poll_s
        self.start_timeout_s = start_timeout_s
        self.tail_lines = tail_lines
        self.watches: dict[str, _Watch] = {}
        # Called once every service first answers SERVING, and after the
        # suite stopped (`lorafleet up` publishes and withdraws suite.json).
        self.on_serving, self.on_stopped = on_serving, on_stopped

    def run(self) -> int:
        """Starts, supervises and stops the suite; returns the exit status."""
        try:
            code = self._start()
            if code is None:
                code = self._supervise()
        finally:
            self._stop()
            if self.on_stopped is not None:
                self.on_stopped()
        return code

    def _start(self) -> int | None:
        try:
            self.suite.check_ports()
        except RuntimeError as exc:
            self.warn(f"lorafleet up: {exc}")
            return 1
        for name in self.suite.names:
            self.suite.spawn(name)
            tracker = RestartTracker(self.policy)
            tracker.started(self.clock())
            self.watches[name] = _Watch(tracker, started_at=self.clock())
        try:
            ready = self.suite.wait_healthy(
                self.start_timeout_s, clock=self.clock, wait=self.wait
            )
        except RuntimeError as exc:
            self.warn(f"lorafleet up: {exc}")
            return 1
        if not ready:
            return 0
        now = self.clock()
        for name, watch in self.watches.items():
            watch.serving = True
            watch.tracker.serving(now)
            pid = self.suite.processes[name].pid
            metrics = self.suite.metrics_url(name)
            self.say(
                f"{name:<11} {self.suite.address(name):<21} pid {pid:<8}"
                + (f" metrics {metrics}" if metrics else "")
            )
        config, logs = self.suite.config, self.suite.log_dir
        self.say(
            f"all services SERVING; state in {config.data_dir.resolve()}, logs in "
            f"{logs.resolve()}; Ctrl-C stops them"
        )
        if self.on_serving is not None:
            self.on_serving()
        return None

    def _supervise(self) -> int:
        """Polls until a stop is requested (0) or a service crash-loops (1)."""
        while True:
            now = self.clock()
            for name in self.suite.names:
                if not self._check(name, now):
                    return 1
            if self.wait(self._next_wait(now)):
                return 0

    def _next_wait(self, now: float) -> float:
        due = [
            w.restart_at - now
            for w in self.watches.values()
            if w.restart_at is not None
        ]
        return max(0.0, min([self.poll_s, *due]))

    def _check(self, name: str, now: float) -> bool:
        """One look at one service; False when it is time to give up."""
        watch = self.watches[name]
        proc = self.suite.processes[name]
        if watch.restart_at is not None:
            if now >= watch.restart_at:
                self._restart(name, now)
            return True
        if proc.poll() is not None:
            watch.last_exit = (
                f"{describe_exit(proc.returncode)} after "
                f"{now - watch.started_at:.0f}s up"
            )
            decision = watch.tracker.exited(now)
            if not decision.restart:
                self._give_up(name, decision)
                return False
            self.say(f"lorafleet up: {name} (pid {proc.pid}) exited: {watch.last_exit}")
            self._show_tail(name, self.say)
            self.say(
                f"lorafleet up: restarting {name} in {decision.delay_s:g}s "
                f"(restart {decision.attempt} of {self.policy.max_restarts})"
            )
            watch.serving = False
            watch.restart_at = now + decision.delay_s
            return True
        if not watch.serving:
            if now - watch.started_at > self.start_timeout_s:
                # Hung in start-up: kill it so the next poll counts the exit.
                self.say(
                    f"lorafleet up: {name} (pid {proc.pid}) not SERVING "
                    f"{self.start_timeout_s:g}s after its restart; killing it"
                )
                proc.kill()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass  # reaped at a later poll
            elif (
                check_health(self.suite.address(name), config=self.suite.config)
                == "SERVING"
            ):
                watch.serving = True
                watch.tracker.serving(now)
                self.say(
                    f"lorafleet up: {name} SERVING again at "
                    f"{self.suite.address(name)} (pid {proc.pid})"
                )
        elif watch.tracker.settle(now):
            self.say(
                f"lorafleet up: {name} stayed SERVING for "
                f"{self.policy.stable_after_s:g}s; its restart count is reset"
            )
        return True

    def _restart(self, name: str, now: float) -> None:
        watch = self.watches[name]
        proc = self.suite.spawn(name)
        watch.restart_at = None
        watch.started_at = now
        watch.tracker.started(now)
        self.say(
            f"lorafleet up: {name} restarted (pid {proc.pid}, restart "
            f"{watch.tracker.exits} of {self.policy.max_restarts})"
        )

    def _give_up(self, name: str, decision: RestartDecision) -> None:
        watch = self.watches[name]
        if self.policy.max_restarts == 0:
            why = f"it exited ({watch.last_exit}) and restarts are off"
        else:
            why = (
                f"it exited {decision.exits} times in a row (the last time: "
                f"{watch.last_exit}); {decision.exits - 1} restarts did not keep it "
                f"SERVING for {self.policy.stable_after_s:g}s"
            )
        self.warn(f"lorafleet up: giving up on {name}: {why}")
        self._show_tail(name, self.warn)
        self.warn(
            f"lorafleet up: the suite cannot work without {name}, so it stops now; "
            f"fix the cause (see the log lines above and "
            f"{self.suite.log_path(name).resolve()}) and run `lorafleet up` again"
        )

    def _show_tail(self, name: str, emit: Callable[[str], None]) -> None:
        tail = self.suite.tail(name, self.tail_lines)
        path = self.suite.log_path(name).resolve()
        if not tail:
            pid = self.suite.processes[name].pid
            emit(f"lorafleet up: pid {pid} wrote nothing to {path}")
            return
        emit(f"lorafleet up: last lines of {path}:")
        for line in tail.splitlines():
            emit(f"  | {line}")

    def _stop(self) -> None:
        for name, watch in self.watches.items():
            if watch.restart_at is not None:
                self.say(f"lorafleet up: {name} was waiting to restart; not restarted")
        self.say("stopping ...")
        codes = self.suite.stop()
        self.say("stopped: " + ", ".join(f"{n}={c}" for n, c in codes.items()))
