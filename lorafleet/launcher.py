"""Runs the six services as local processes (`lorafleet up`) and stops them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import DEFAULT_PORTS, SERVICE_NAMES, Config

# Registry first (everyone resolves artifacts through it), gateway last.
START_ORDER = ("registry", "trainer", "merger", "validator", "inference", "gateway")


@dataclass
class LocalSuite:
    config: Config
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_dir: Path = Path(".")

    def address(self, name: str) -> str:
        return f"{self.config.host}:{self.ports[name]}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config.as_env())
        env.pop("LORAFLEET_PORT", None)
        for name in SERVICE_NAMES:
            env[f"LORAFLEET_{name.upper()}_ADDRESS"] = self.address(name)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start(self, timeout_s: float = 180.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        for name in START_ORDER:
            log = open(self.log_dir / f"{name}.log", "ab")
            self.processes[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    f"services.{name}",
                    "--port",
                    str(self.ports[name]),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # Ctrl-C reaches us, we stop them in order
            log.close()
        self.wait_healthy(timeout_s)

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = set(self.processes)
        while pending:
            for name in sorted(pending):
                proc = self.processes[name]
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {proc.returncode} during "
                        f"start-up; see {self.log_dir / (name + '.log')}:\n"
                        + self.tail(name)
                    )
                if check_health(self.address(name)) == "SERVING":
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(
                    f"not SERVING after {timeout_s:.0f}s: {', '.join(sorted(pending))}"
                )
            if pending:
                time.sleep(0.25)

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float | None = None) -> dict[str, int | None]:
        """SIGTERM in reverse order (gateway first), SIGKILL after the grace period."""
        grace = self.config.grace_period_s + 5 if grace_s is None else grace_s
        for name in reversed(START_ORDER):
            proc = self.processes.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        codes: dict[str, int | None] = {}
        for name, proc in self.processes.items():
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def dead(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is not None]


def check_health(address: str, timeout_s: float = 1.0) -> str:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError:
        return "UNREACHABLE"


def plan_ports(base_port: int | None) -> dict[str, int]:
    if base_port is None:
        return dict(DEFAULT_PORTS)
    return {
        name: base_port + i
        for i, name in enumerate(
            ("gateway", "registry", "trainer", "merger", "validator", "inference")
        )
    }
