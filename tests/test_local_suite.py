"""`lorafleet up` runs, restarts and stops six real processes; compose is valid."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import yaml

from services.local.launcher import check_health, free_port_block

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "registry", "trainer", "merger", "validator", "inference")


class Output:
    """A process's output read on a thread, so every wait has a timeout."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.done = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.done = True
            self._changed.notify_all()

    def wait_for(self, fragment: str, timeout_s: float, after: int = 0) -> str:
        """The first line from index ``after`` on that contains ``fragment``."""

        def found():
            return next((ln for ln in self.lines[after:] if fragment in ln), None)

        with self._changed:
            self._changed.wait_for(lambda: found() or self.done, timeout_s)
            line = found()
        assert line, f"no {fragment!r} in the output:\n" + "\n".join(self.lines)
        return line


CLI = [sys.executable, "-m", "services.cli.main"]


def cli_env(state: Path) -> dict[str, str]:
    """The CLI's environment in a test: its own per-user state (where `up`
    records the newest suite), no suite settings of the caller's, and the
    checkout importable from any working directory."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "XDG_STATE_HOME": str(state),
        "PYTHONPATH": str(ROOT),
    }
    for var in ("LORAFLEET_DATA_DIR", "LORAFLEET_CONFIG", "LORAFLEET_REGISTRY_ADDRESS"):
        env.pop(var, None)
    return env


def start_up(
    data: Path, env: dict[str, str], base: int, metrics_base: int = 0
) -> subprocess.Popen:
    """`lorafleet up --data-dir DATA --base-port BASE` with free metrics
    ports (never the default 9464...: another suite may hold those), its
    output piped."""
    metrics_base = metrics_base or free_port_block()
    return subprocess.Popen(
        CLI
        + ["up", "--data-dir", str(data), "--base-port", str(base)]
        + ["--metrics-base-port", str(metrics_base)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def run_cli(args: list[str], cwd: Path, env: dict[str, str]):
    return subprocess.run(
        CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return reply.read().decode()


def worker_id_of(pid: int) -> str:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(
        v.split(b"=", 1)[1].decode()
        for v in environ
        if v.startswith(b"LORAFLEET_WORKER_ID=")
    )


def test_up_serves_restarts_a_killed_service_and_stops_on_sigterm(
    tmp_path, tiny_model_dir
):
    """One start of the real suite: serve, be found by the other commands,
    survive a SIGKILL, stop in order."""
    base, metrics_base = free_port_block(), free_port_block()
    data, state = tmp_path / "data", tmp_path / "state"
    env = cli_env(state)
    proc = start_up(data, env, base, metrics_base)
    out = Output(proc.stdout)
    try:
        out.wait_for("all services SERVING", timeout_s=400)
        listed = {
            ln.split()[0]: (ln.split()[1], int(ln.split()[3]))
            for ln in out.lines
            if ln.split() and ln.split()[0] in SERVICES
        }
        assert set(listed) == set(SERVICES), out.lines
        assert listed["gateway"][0] == f"127.0.0.1:{base}"
        for name, (address, _) in listed.items():
            assert check_health(address) == "SERVING", name
        assert (data / "registry.db").exists()

        # The suite is found from its data directory, and from anywhere
        # else as the newest one: `models import` needs no ports or paths.
        record = json.loads((data / "suite.json").read_text())
        assert record["pid"] == proc.pid
        assert record["addresses"] == {n: a for n, (a, _) in listed.items()}
        assert record["staging_dir"] == str((data / "staging").resolve())
        pointer = state / "lorafleet" / "current-suite.json"
        assert json.loads(pointer.read_text()) == record
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        import_tiny = ["models", "import", str(tiny_model_dir), "--name", "tiny-found"]
        imported = run_cli(import_tiny, elsewhere, env)
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.startswith("tiny-found:1 ")
        assert not (elsewhere / ".lorafleet").exists()
        # A first-start script runs it again: nothing is converted twice.
        again = run_cli(import_tiny + ["--if-missing"], elsewhere, env)
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("tiny-found:1 ")
        assert again.stdout.rstrip().endswith("(already registered)")

        # Each process serves its metrics where its line says.
        urls = {
            ln.split()[0]: ln.split()[-1] for ln in out.lines if " metrics http" in ln
        }
        assert urls["gateway"] == f"http://127.0.0.1:{metrics_base}/metrics"
        assert set(urls) == set(SERVICES) and record["metrics"] == urls
        registry = scrape(urls["registry"])
        assert 'service_name="lorafleet-registry"' in registry  # target_info
        assert 'rpc_method="lorafleet.v1.RegistryService/RegisterArtifact"' in registry
        assert "rpc_server_call_duration_seconds_bucket" in registry
        trainer = scrape(urls["trainer"])
        assert "lorafleet_job_queue_depth{" in trainer
        assert 'lorafleet_job_kind="train"' in trainer

        # SIGKILL the trainer: it comes back under the same worker id, alone.
        address, old_pid = listed["trainer"]
        worker_id = f"{socket.gethostname()}-trainer-{base}"
        assert worker_id_of(old_pid) == worker_id
        mark = len(out.lines)
        os.kill(old_pid, signal.SIGKILL)
        out.wait_for(
            f"trainer (pid {old_pid}) exited: killed by SIGKILL", 120, after=mark
        )
        out.wait_for("restarting trainer in 1s (restart 1 of 5)", 120, after=mark)
        restarted = out.wait_for("trainer restarted (pid ", 120, after=mark)
        new_pid = int(restarted.split("(pid ")[1].split(",")[0])
        assert new_pid != old_pid
        out.wait_for(
            f"trainer SERVING again at {address} (pid {new_pid})", 400, after=mark
        )
        assert check_health(address) == "SERVING"
        assert worker_id_of(new_pid) == worker_id
        for name, (other_address, pid) in listed.items():
            if name != "trainer":
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                assert f"services.{name}".encode() in cmdline, name  # same pid
                assert check_health(other_address) == "SERVING", name
                assert not any(f"{name} restarted" in ln for ln in out.lines)

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        out.wait_for("stopped:", 300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "\n".join(out.lines)
    stopped = next(ln for ln in out.lines if ln.startswith("stopped:"))
    assert stopped == (
        "stopped: gateway=0, inference=0, validator=0, merger=0, trainer=0, registry=0"
    )
    for address, _ in listed.values():
        assert check_health(address, timeout_s=0.5) == "UNREACHABLE"
    assert not (data / "suite.json").exists()
    assert not pointer.exists()


def test_compose_file_wires_the_six_services(tmp_path):
    compose = ROOT / "deploy" / "compose" / "docker-compose.yml"
    spec = yaml.safe_load(compose.read_text())
    # Inference runs as two replicas; the gateway routes across both.
    replicas = ["inference-1", "inference-2"]
    containers = {s for s in SERVICES if s != "inference"} | set(replicas)
    telemetry = {"otel-collector", "jaeger", "prometheus", "grafana"}
    assert containers | {"postgres", "init"} | telemetry == set(spec["services"])
    registry_env = spec["services"]["registry"]["environment"]
    assert registry_env["LORAFLEET_REGISTRY_DSN"].startswith("postgresql+psycopg://")
    for name in containers:
        service = spec["services"][name]
        assert service["command"][0] == name.split("-")[0]
        env = service["environment"]
        assert env["LORAFLEET_DATA_DIR"] == "/data"
        assert "otel-collector:4317" in env["LORAFLEET_OTLP_ENDPOINT"]
        # Auth on by default; the service secret has no default at all.
        assert env["LORAFLEET_AUTH_MODE"] == "${LORAFLEET_AUTH_MODE:-required}"
        assert env["LORAFLEET_AUTH_SERVICE_SECRET"].startswith(
            "${LORAFLEET_AUTH_SERVICE_SECRET:?"
        ), name
        for optional in ("JWT_SECRET", "JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
            assert env[f"LORAFLEET_AUTH_{optional}"] == (
                f"${{LORAFLEET_AUTH_{optional}:-}}"
            ), (name, optional)
        assert "services.common.healthcheck" in service["healthcheck"]["test"]
        # Started only once what it needs answers its health check.
        needs = service["depends_on"]
        assert needs and all(
            v["condition"] in ("service_healthy", "service_completed_successfully")
            for v in needs.values()
        ), name
        # Stopped only after its own drain had time to finish.
        grace = float(env["LORAFLEET_GRACE_PERIOD_S"])
        assert float(service["stop_grace_period"].rstrip("s")) > grace, name
    gateway = spec["services"]["gateway"]
    assert gateway["environment"]["LORAFLEET_INFERENCE_REPLICAS"] == (
        "inference-1:50055,inference-2:50055"
    )
    assert set(replicas) <= set(gateway["depends_on"])
    assert gateway["depends_on"]["init"]["condition"] == (
        "service_completed_successfully"
    )
    init = " ".join(spec["services"]["init"]["command"])
    assert "models import smollm2" in init and "--if-missing" in init
    assert "/data/datasets/orders.jsonl" in init
    # The import authenticates with a short-lived key init writes straight
    # into the registry's database, and revokes it afterwards ($$: compose).
    init_env = spec["services"]["init"]["environment"]
    assert init_env["LORAFLEET_REGISTRY_DSN"] == registry_env["LORAFLEET_REGISTRY_DSN"]
    create = init.index("KEY=$$(lorafleet auth keys create --bootstrap")
    assert '--dsn "$$LORAFLEET_REGISTRY_DSN"' in init
    assert "--role default=operator --ttl-days" in init
    revoke = init.index('lorafleet auth keys revoke --dsn "$$LORAFLEET_REGISTRY_DSN"')
    assert 'export LORAFLEET_API_KEY="$$KEY"' in init
    assert create < revoke < init.index("lorafleet models import")
    # Every image is pinned to a release.
    for name, service in spec["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
    dockerfile = (compose.parent / "Dockerfile").read_text()
    assert "FROM python:3.11.11-slim" in dockerfile
    assert "download.pytorch.org/whl/cpu" in dockerfile
    # the trainer compiles its native dropout kernel there
    assert "gcc" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "node_modules", ".lorafleet"} <= set(ignored)
    if shutil.which("docker-compose"):  # Debian's package; CI installs it
        secret = "LORAFLEET_AUTH_SERVICE_SECRET"
        env = {k: v for k, v in os.environ.items() if k != secret}
        out = subprocess.run(
            ["docker-compose", "config", "-q"],
            cwd=compose.parent,
            env=env | {secret: "x" * 48},
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        # Without the secret (and without a local .env) compose refuses, saying
        # how to make one.
        empty = tmp_path / "empty.env"
        empty.write_text("")
        out = subprocess.run(
            ["docker-compose", "--env-file", str(empty), "config", "-q"],
            cwd=compose.parent,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode != 0
        assert f"set {secret} (openssl rand -base64 48) in .env" in out.stderr
