"""Runs the six services as local processes (`lorafleet up`) and stops them cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import DEFAULT_PORTS, Config
from services.common.tls import secure_or_insecure_channel

# Registry first (everyone resolves artifacts through it), gateway last.
START_ORDER = ("registry", "trainer", "merger", "validator", "inference", "gateway")


def service_of(name: str) -> str:
    """The service a process runs: ``inference-2`` is an inference replica."""
    return name.split("-", 1)[0]


def start_order(inference_replicas: int = 1) -> tuple[str, ...]:
    """START_ORDER with inference as `inference_replicas` processes
    (``inference``, ``inference-2``, ...), all before the gateway."""
    if inference_replicas < 1:
        raise ValueError(
            f"inference replicas must be at least 1, got {inference_replicas}"
        )
    extra = tuple(f"inference-{i}" for i in range(2, inference_replicas + 1))
    return START_ORDER[:-1] + extra + START_ORDER[-1:]


def service_command(name: str, port: int) -> list[str]:
    """How a service is started: ``python -m services.<name> --port <port>``."""
    return [sys.executable, "-m", f"services.{service_of(name)}", "--port", str(port)]


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


@dataclass
class LocalSuite:
    """The services as child processes: start, restart one, stop all in order.

    ``names`` (start order) and ``command`` exist so tests can run stand-in
    processes; everything else uses the defaults.
    """

    config: Config
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_dir: Path = Path(".")
    names: Sequence[str] = START_ORDER
    command: Callable[[str, int], list[str]] = service_command
    hostname: str = field(default_factory=socket.gethostname)
    # Where each service's current run starts in its (appended) log file.
    log_offsets: dict[str, int] = field(default_factory=dict)
    # Each process's Prometheus scrape port (none: no metrics endpoints).
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def address(self, name: str) -> str:
        return f"{self.config.host}:{self.ports[name]}"

    def metrics_url(self, name: str) -> str:
        port = self.metrics_ports.get(name)
        host = self.config.metrics_host or self.config.host
        return f"http://{host}:{port}/metrics" if port else ""

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def worker_id(self, name: str) -> str:
        """``<hostname>-<service>-<gateway port>``: the same across restarts.

        Durable job queues key running jobs by worker id, so a restarted
        service takes its jobs back at once instead of waiting for their
        leases to expire; the gateway port tells suites on one host apart.
        """
        return f"{self.hostname}-{name}-{self.ports.get('gateway', self.ports[name])}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.config.as_env())
        env.pop("LORAFLEET_PORT", None)
        for name in self.ports:
            if service_of(name) == name:
                env[f"LORAFLEET_{name.upper()}_ADDRESS"] = self.address(name)
        replicas = [self.address(n) for n in self.names if service_of(n) == "inference"]
        if len(replicas) > 1:  # the gateway routes across them all
            env["LORAFLEET_INFERENCE_REPLICAS"] = ",".join(replicas)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def service_env(self, name: str) -> dict[str, str]:
        """The shared env plus this service's stable ``LORAFLEET_WORKER_ID``."""
        env = self.env()
        env["LORAFLEET_WORKER_ID"] = self.worker_id(name)
        # One port per process: a configured metrics_port would collide.
        env.pop("LORAFLEET_METRICS_PORT", None)
        if name in self.metrics_ports:
            env["LORAFLEET_METRICS_PORT"] = str(self.metrics_ports[name])
        if name == "trainer" and not getattr(self.config, "trainer_worker_id", ""):
            # Until the trainer reads `worker_id`, its own setting does the same.
            env["LORAFLEET_TRAINER_WORKER_ID"] = self.worker_id(name)
        return env

    def spawn(self, name: str) -> subprocess.Popen:
        """Starts (or restarts) one service, appending to its log file."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path(name), "ab") as log:
            self.log_offsets[name] = log.seek(0, os.SEEK_END)
            self.processes[name] = subprocess.Popen(
                self.command(name, self.ports[name]),
                env=self.service_env(name),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # Ctrl-C reaches us only; we stop them in order
        return self.processes[name]

    def taken_ports(self) -> list[str]:
        """The planned ports (gRPC and metrics) something already listens on,
        as "name port" each: another suite there would answer our health
        checks while our own processes die on the bind."""
        planned = [(n, self.ports[n]) for n in self.names]
        planned += [(f"{n} metrics", p) for n, p in self.metrics_ports.items()]
        taken = []
        for name, port in planned:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.config.host, port))
                except OSError:
                    taken.append(f"{name} {port}")
        return taken

    def check_ports(self) -> None:
        taken = self.taken_ports()
        if taken:
            raise RuntimeError(
                f"ports already in use on {self.config.host}: {', '.join(taken)} "
                "(another lorafleet suite?): stop it, or choose other ports "
                "(--base-port, --metrics-base-port)"
            )

    def start(self, timeout_s: float = 180.0) -> None:
        self.check_ports()
        for name in self.names:
            self.spawn(name)
        self.wait_healthy(timeout_s)

    def wait_healthy(
        self,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] = _sleep,
    ) -> bool:
        """Waits until every service is SERVING; False if ``wait`` said stop.

        A service that exits during start-up raises at once with its log tail:
        the first start failing is a configuration problem, not bad luck.
        """
        deadline = clock() + timeout_s
        pending = set(self.processes)
        while pending:
            for name in sorted(pending):
                proc = self.processes[name]
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited ({describe_exit(proc.returncode)}) during "
                        f"start-up; see {self.log_path(name)}:\n" + self.tail(name)
                    )
                if check_health(self.address(name), config=self.config) == "SERVING":
                    pending.discard(name)
            if pending and clock() > deadline:
                raise RuntimeError(
                    f"not SERVING after {timeout_s:.0f}s: {', '.join(sorted(pending))}"
                )
            if pending and wait(0.25):
                return False
        return True

    def tail(self, name: str, lines: int = 20) -> str:
        """The last ``lines`` lines the service's current run wrote to its log.

        Earlier runs' lines are left out: after a crash they would only blur
        which run said what. Reads at most the last 64 KiB.
        """
        try:
            with open(self.log_path(name), "rb") as f:
                end = f.seek(0, os.SEEK_END)
                f.seek(max(self.log_offsets.get(name, 0), end - 64 * 1024))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float | None = None) -> dict[str, int | None]:
        """Stops in reverse start order; SIGKILL whatever outlives the grace period.

        The gateway goes first (no new work comes in), then the workers
        together, then the registry, so draining workers can still record
        their results. Returns exit codes in stop order.
        """
        grace = self.config.grace_period_s + 5 if grace_s is None else grace_s
        codes: dict[str, int | None] = {}
        for stage in stop_stages(self.names):
            procs = {n: self.processes[n] for n in stage if n in self.processes}
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for name, proc in procs.items():
                try:
                    codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    codes[name] = proc.wait()
        return codes

    def dead(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is not None]


def stop_stages(start_order: Sequence[str]) -> list[list[str]]:
    """Last started alone, then the middle ones together, then the first alone."""
    order = list(start_order)
    if len(order) <= 2:
        return [[n] for n in reversed(order)]
    return [[order[-1]], list(reversed(order[1:-1])), [order[0]]]


def describe_exit(returncode: int | None) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` (Popen reports signals as -N)."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def check_health(
    address: str, timeout_s: float = 1.0, config: Config | None = None
) -> str:
    """The grpc.health.v1 status of the server at `address` ("SERVING", ...),
    or "UNREACHABLE". `config` gives the TLS settings to call it with (the
    suite's own, so a TLS suite's health is checked over TLS); None calls in
    plaintext. A TLS handshake that fails is UNREACHABLE too."""
    try:
        channel = (
            grpc.insecure_channel(address)
            if config is None
            else secure_or_insecure_channel(address, config)
        )
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError:
        return "UNREACHABLE"


def plan_ports(base_port: int | None, inference_replicas: int = 1) -> dict[str, int]:
    """Each process's port: the defaults (or `base_port` + 0..5), then more
    inference replicas on the ports after those."""
    if base_port is None:
        ports = dict(DEFAULT_PORTS)
    else:
        ports = {
            name: base_port + i
            for i, name in enumerate(
                ("gateway", "registry", "trainer", "merger", "validator", "inference")
            )
        }
    extra = [n for n in start_order(inference_replicas) if n not in ports]
    after = max(ports.values()) + 1
    ports.update({name: after + i for i, name in enumerate(extra)})
    return ports


DEFAULT_METRICS_BASE_PORT = 9464  # OpenTelemetry's Prometheus exporter default


def plan_metrics_ports(ports: dict[str, int], metrics_base: int) -> dict[str, int]:
    """Each process's scrape port: `metrics_base` plus its offset in the
    gRPC port plan (gateway first, as its port is the lowest), so the two
    plans line up; 0 plans none."""
    if not metrics_base:
        return {}
    first = min(ports.values())
    return {name: metrics_base + port - first for name, port in ports.items()}


def free_port_block(size: int = 6) -> int:
    """A base port whose next `size` ports are free right now (for test and
    benchmark suites that must not collide with a running one)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + size >= 65000:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port block")
