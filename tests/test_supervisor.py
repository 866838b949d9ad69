"""`lorafleet up`'s supervisor: restart policy on a fake clock, stand-in processes."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from services.cli.main import main
from services.common.config import Config
from services.local.launcher import (
    START_ORDER,
    LocalSuite,
    describe_exit,
    free_port_block,
    plan_ports,
    service_command,
    start_order,
    stop_stages,
)
from services.local.restart_policy import RestartPolicy, RestartTracker
from services.local.supervisor import Supervisor

# A stand-in service: serves grpc.health.v1 (SERVING) on its port until SIGTERM,
# except in mode "flaky" after its first run and in mode "broken", where it
# prints a reason and exits 3 at once, and in mode "hang" after its first run,
# where it never serves. Its runs are counted in a file.
STAND_IN = """
import os, signal, sys
from concurrent import futures
from pathlib import Path

runs_file, port, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = int(runs_file.read_text()) + 1 if runs_file.exists() else 1
runs_file.write_text(str(runs))
print(f"run {runs} (worker {os.environ.get('LORAFLEET_WORKER_ID')})", flush=True)
if mode == "broken" or (mode == "flaky" and runs > 1):
    print(f"boom: cannot open the database (run {runs})", flush=True)
    sys.exit(3)
if mode == "hang" and runs > 1:
    signal.pause()

import grpc
from grpc_health.v1 import health, health_pb2_grpc

server = grpc.server(futures.ThreadPoolExecutor(2))
health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
server.add_insecure_port(f"127.0.0.1:{port}")
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
server.start()
server.wait_for_termination()
"""


class FakeClock:
    """Time the supervisor reads and waits on; a wait moves it on at once."""

    def __init__(self) -> None:
        self.now = 0.0
        self.stop_requested = False

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        time.sleep(0.01)  # lets the real child processes run; not a time bound
        return self.stop_requested


class Recorder:
    """Collects supervisor output with the fake time it was said at."""

    def __init__(self, clock: FakeClock, reactions: dict) -> None:
        self.clock, self.reactions = clock, reactions
        self.lines: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.lines.append((self.clock.now, message))
        for prefix, react in list(self.reactions.items()):
            if prefix in message:
                del self.reactions[prefix]
                react()

    def text(self) -> str:
        return "\n".join(m for _, m in self.lines)

    def at(self, fragment: str) -> float:
        return next(t for t, m in self.lines if fragment in m)


def stand_in_suite(tmp_path: Path, modes: dict[str, str]) -> LocalSuite:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    base = free_port_block(len(modes))
    return LocalSuite(
        config=Config(auth_mode="disabled", data_dir=tmp_path, grace_period_s=1.0),
        ports={name: base + i for i, name in enumerate(modes)},
        log_dir=tmp_path / "logs",
        names=tuple(modes),
        command=lambda name, port: [
            sys.executable,
            str(script),
            str(tmp_path / f"{name}.runs"),
            str(port),
            modes[name],
        ],
        hostname="box",
    )


def runs(tmp_path: Path, name: str) -> int:
    return int((tmp_path / f"{name}.runs").read_text())


def supervisor(suite, policy, reactions, clock) -> tuple[Supervisor, Recorder]:
    out = Recorder(clock, reactions)
    return Supervisor(
        suite,
        policy,
        clock=clock,
        wait=clock.wait,
        say=out,
        warn=out,
        start_timeout_s=1e9,  # fake seconds; start-up pace is the machine's
    ), out


def supervise(suite, policy, reactions, clock=None) -> tuple[int, Recorder]:
    sup, out = supervisor(suite, policy, reactions, clock or FakeClock())
    return sup.run(), out


def kill(suite: LocalSuite, name: str):
    return lambda: os.kill(suite.processes[name].pid, signal.SIGKILL)


# --- the restart policy, no processes ---


def test_backoff_doubles_up_to_the_cap():
    policy = RestartPolicy(initial_backoff_s=1, max_backoff_s=30)
    assert [policy.delay_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_gives_up_after_max_failed_restarts_in_a_row():
    tracker = RestartTracker(RestartPolicy(max_restarts=5))
    now, decisions = 0.0, []
    tracker.serving(now)
    for _ in range(6):
        now += 1
        decision = tracker.exited(now)
        decisions.append(decision)
        now += decision.delay_s
        tracker.started(now)
        tracker.serving(now + 1)  # SERVING briefly, less than stable_after_s
    assert [(d.restart, d.attempt, d.delay_s) for d in decisions] == [
        (True, 1, 1),
        (True, 2, 2),
        (True, 3, 4),
        (True, 4, 8),
        (True, 5, 16),
        (False, 6, 0),
    ]
    assert decisions[-1].exits == 6


def test_staying_serving_resets_the_streak():
    tracker = RestartTracker(RestartPolicy(max_restarts=2, stable_after_s=60))
    assert tracker.exited(10).attempt == 1
    tracker.started(11)
    assert tracker.exited(12).attempt == 2
    tracker.started(14)
    tracker.serving(20)
    assert not tracker.settle(79.9)
    assert tracker.settle(80)  # SERVING for 60 s: recovered
    assert not tracker.settle(81)  # said once
    decision = tracker.exited(500)
    assert (decision.restart, decision.attempt, decision.delay_s) == (True, 1, 1)


def test_reset_is_judged_at_exit_time_too():
    tracker = RestartTracker(RestartPolicy(max_restarts=1, stable_after_s=60))
    tracker.exited(0)
    tracker.started(1)
    tracker.serving(5)
    assert tracker.exited(64.9).restart is False  # 59.9 s SERVING: still a loop
    tracker = RestartTracker(RestartPolicy(max_restarts=1, stable_after_s=60))
    tracker.exited(0)
    tracker.started(1)
    tracker.serving(5)
    assert tracker.exited(65).attempt == 1


def test_uptime_without_serving_does_not_count_as_recovered():
    tracker = RestartTracker(RestartPolicy(max_restarts=1, stable_after_s=60))
    tracker.exited(0)
    tracker.started(1)
    assert tracker.exited(1000).restart is False  # up for ages, never SERVING


def test_zero_max_restarts_gives_up_at_the_first_exit():
    decision = RestartTracker(RestartPolicy(max_restarts=0)).exited(0)
    assert (decision.restart, decision.exits) == (False, 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_restarts": -1},
        {"initial_backoff_s": -1},
        {"initial_backoff_s": 10, "max_backoff_s": 5},
        {"stable_after_s": -1},
    ],
)
def test_policy_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)


def test_up_refuses_a_bad_flag_before_starting_anything(capsys):
    assert main(["up", "--restart-backoff", "60", "--restart-backoff-max", "5"]) == 2
    assert "below the initial backoff" in capsys.readouterr().err


def test_exits_are_described_by_code_or_signal():
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_stop_order_is_gateway_then_workers_then_registry():
    assert stop_stages(START_ORDER) == [
        ["gateway"],
        ["inference", "validator", "merger", "trainer"],
        ["registry"],
    ]


def test_every_service_gets_a_stable_worker_id_and_the_shared_env(tmp_path):
    suite = LocalSuite(
        config=Config(auth_mode="disabled", data_dir=tmp_path),
        ports=plan_ports(7000),
        hostname="box",
    )
    for name in START_ORDER:
        env = suite.service_env(name)
        assert env["LORAFLEET_WORKER_ID"] == f"box-{name}-7000"
        assert env["LORAFLEET_REGISTRY_ADDRESS"] == "127.0.0.1:7001"
        assert env["LORAFLEET_GATEWAY_ADDRESS"] == "127.0.0.1:7000"
        assert env["LORAFLEET_DATA_DIR"] == str(tmp_path)
        assert "LORAFLEET_PORT" not in env
    assert suite.service_env("trainer")["LORAFLEET_TRAINER_WORKER_ID"] == (
        "box-trainer-7000"
    )


def test_more_inference_replicas_run_the_inference_service_and_feed_the_gateway(
    tmp_path,
):
    names = start_order(3)
    assert names[-1] == "gateway" and names[4:7] == (
        "inference",
        "inference-2",
        "inference-3",
    )
    ports = plan_ports(7000, 3)
    assert (ports["inference"], ports["inference-2"], ports["inference-3"]) == (
        7005,
        7006,
        7007,
    )
    assert plan_ports(None, 2)["inference-2"] == 50056
    suite = LocalSuite(
        config=Config(auth_mode="disabled", data_dir=tmp_path),
        ports=ports,
        names=names,
        hostname="box",
    )
    assert service_command("inference-3", 7007)[1:] == [
        "-m",
        "services.inference",
        "--port",
        "7007",
    ]
    env = suite.service_env("inference-2")
    assert env["LORAFLEET_WORKER_ID"] == "box-inference-2-7000"
    assert env["LORAFLEET_INFERENCE_REPLICAS"] == (
        "127.0.0.1:7005,127.0.0.1:7006,127.0.0.1:7007"
    )
    assert not any("-" in key for key in env if key.startswith("LORAFLEET_"))
    # One replica: no list, the gateway uses inference_address.
    single = LocalSuite(
        config=Config(auth_mode="disabled", data_dir=tmp_path), ports=plan_ports(7000)
    )
    assert single.service_env("gateway").get("LORAFLEET_INFERENCE_REPLICAS") == ""
    # Stopped with the other workers, after the gateway.
    assert stop_stages(names)[1][:3] == ["inference-3", "inference-2", "inference"]
    with pytest.raises(ValueError, match="at least 1"):
        start_order(0)


# --- the supervisor with stand-in processes and a fake clock ---


def test_crash_loop_gives_up_with_the_reason_and_stops_the_suite(tmp_path):
    suite = stand_in_suite(tmp_path, {"keeper": "steady", "flaky": "flaky"})
    policy = RestartPolicy(max_restarts=3, initial_backoff_s=1, max_backoff_s=4)
    code, out = supervise(suite, policy, {"all services SERVING": kill(suite, "flaky")})
    text = out.text()
    assert code == 1, text
    assert "flaky (pid" in text and "exited: killed by SIGKILL" in text
    for attempt, delay in ((1, 1), (2, 2), (3, 4)):
        restarting = f"restarting flaky in {delay}s (restart {attempt} of 3)"
        restarted = "flaky restarted (pid"
        assert restarting in text, text
        # the fake clock shows the backoff was waited out, to the poll step
        waited = next(
            t for t, m in out.lines if restarted in m and t >= out.at(restarting)
        ) - out.at(restarting)
        assert waited == pytest.approx(delay, abs=0.5)
    assert text.count("exited: exit code 3") == 2  # the 4th exit is the give-up
    assert (
        "giving up on flaky: it exited 4 times in a row (the last time: "
        "exit code 3 after " in text
    )
    assert "3 restarts did not keep it SERVING for 60s" in text
    assert "  | boom: cannot open the database (run 4)" in text
    give_up = text[text.index("giving up on flaky") :]
    assert "(run 3)" not in give_up  # the tail is the last run's alone
    assert "the suite cannot work without flaky, so it stops now" in text
    assert "run `lorafleet up` again" in text
    assert runs(tmp_path, "flaky") == 4  # first start + 3 restarts
    assert runs(tmp_path, "keeper") == 1  # never touched
    assert out.lines[-1][1] == "stopped: flaky=3, keeper=0"
    log = (tmp_path / "logs" / "flaky.log").read_text().splitlines()
    workers = [ln.split("(worker ")[1] for ln in log if ln.startswith("run ")]
    assert workers == [f"box-flaky-{suite.ports['flaky']})"] * 4  # one identity


def test_a_restarted_service_that_stays_serving_is_forgiven(tmp_path):
    suite = stand_in_suite(tmp_path, {"keeper": "steady", "flaky": "steady"})
    clock = FakeClock()
    policy = RestartPolicy(max_restarts=1, stable_after_s=60)
    code, out = supervise(
        suite,
        policy,
        {
            "all services SERVING": kill(suite, "flaky"),
            "restart count is reset": lambda: setattr(clock, "stop_requested", True),
        },
        clock,
    )
    text = out.text()
    assert code == 0, text
    assert "restarting flaky in 1s (restart 1 of 1)" in text
    assert "flaky SERVING again at 127.0.0.1:" in text
    assert "flaky stayed SERVING for 60s; its restart count is reset" in text
    serving_again = out.at("flaky SERVING again")
    assert out.at("restart count is reset") - serving_again >= 60
    assert runs(tmp_path, "flaky") == 2
    assert runs(tmp_path, "keeper") == 1
    assert out.lines[-1][1] == "stopped: flaky=0, keeper=0"


def test_a_stop_during_backoff_does_not_restart(tmp_path):
    suite = stand_in_suite(tmp_path, {"keeper": "steady", "flaky": "steady"})
    clock = FakeClock()
    code, out = supervise(
        suite,
        RestartPolicy(initial_backoff_s=5),
        {
            "all services SERVING": kill(suite, "flaky"),
            "restarting flaky in 5s": lambda: setattr(clock, "stop_requested", True),
        },
        clock,
    )
    text = out.text()
    assert code == 0, text
    assert "flaky was waiting to restart; not restarted" in text
    assert "flaky restarted" not in text
    assert runs(tmp_path, "flaky") == 1
    assert out.lines[-1][1] == "stopped: flaky=-9, keeper=0"


def test_a_service_failing_its_first_start_is_not_restarted(tmp_path):
    suite = stand_in_suite(tmp_path, {"keeper": "steady", "broken": "broken"})
    code, out = supervise(suite, RestartPolicy(), {})
    text = out.text()
    assert code == 1, text
    assert "broken exited (exit code 3) during start-up" in text
    assert "boom: cannot open the database (run 1)" in text
    assert runs(tmp_path, "broken") == 1
    assert "stopped: broken=3, keeper=" in text


def test_a_restart_that_never_serves_is_killed_and_counts_as_failed(tmp_path):
    suite = stand_in_suite(tmp_path, {"keeper": "steady", "flaky": "hang"})
    clock = FakeClock()
    reactions = {}
    sup, out = supervisor(suite, RestartPolicy(max_restarts=1), reactions, clock)

    def started():
        sup.start_timeout_s = 30  # the first start is over; now judge restarts
        kill(suite, "flaky")()

    reactions["all services SERVING"] = started
    code = sup.run()
    text = out.text()
    assert code == 1, text
    assert "flaky restarted (pid" in text
    assert "not SERVING 30s after its restart; killing it" in text
    assert (
        "giving up on flaky: it exited 2 times in a row (the last time: "
        "killed by SIGKILL after " in text
    )
    assert runs(tmp_path, "flaky") == 2
    assert out.lines[-1][1] == "stopped: flaky=-9, keeper=0"


def test_a_stop_during_start_up_stops_what_was_started(tmp_path):
    suite = stand_in_suite(tmp_path, {"keeper": "steady", "other": "steady"})
    clock = FakeClock()
    clock.stop_requested = True  # Ctrl-C before anything answered
    code, out = supervise(suite, RestartPolicy(), {}, clock)
    text = out.text()
    assert code == 0, text
    assert "all services SERVING" not in text
    assert out.lines[-1][1].startswith("stopped: other=")
    assert all(p.poll() is not None for p in suite.processes.values())


def test_a_suite_refuses_ports_something_already_listens_on(tmp_path):
    """Another suite on the planned ports would answer the health checks
    while our own processes die on the bind: refused before spawning."""
    base = free_port_block()
    with socket.socket() as other:
        other.bind(("127.0.0.1", base))  # as another suite's gateway would
        other.listen()
        suite = LocalSuite(
            config=Config(auth_mode="disabled", data_dir=tmp_path),
            ports=plan_ports(base),
            log_dir=tmp_path / "logs",
        )
        with pytest.raises(
            RuntimeError, match=rf"in use on 127.0.0.1: gateway {base} "
        ):
            suite.start()
        assert suite.processes == {}
        warnings: list[str] = []
        policy = RestartPolicy(max_restarts=1)
        assert Supervisor(suite, policy, warn=warnings.append).run() == 1
        assert suite.processes == {}
        assert "--base-port" in warnings[0]
