"""`lorafleet up` runs six real processes and stops them cleanly; compose is valid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lorafleet.launcher import check_health

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "registry", "trainer", "merger", "validator", "inference")


def free_port_block(size: int = 6) -> int:
    """A base port whose next `size` ports are free right now."""
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


def test_up_serves_every_service_and_stops_on_sigterm(tmp_path):
    base = free_port_block()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lorafleet.cli",
            "--data-dir",
            str(tmp_path),
            "up",
            "--base-port",
            str(base),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            line = proc.stdout.readline()
            assert line, "lorafleet up exited early:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("all services SERVING"):
                break
        listed = {
            ln.split()[0]: ln.split()[1]
            for ln in lines
            if ln.split() and ln.split()[0] in SERVICES
        }
        assert set(listed) == set(SERVICES), lines
        assert listed["gateway"] == f"127.0.0.1:{base}"
        for name, address in listed.items():
            assert check_health(address) == "SERVING", name
        assert (tmp_path / "registry.db").exists()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "stopped:" in rest and "=0" in rest
    assert all(f"{n}=0" in rest for n in SERVICES), rest
    for address in listed.values():
        assert check_health(address, timeout_s=0.5) == "UNREACHABLE"


def test_compose_file_wires_the_six_services():
    compose = ROOT / "deploy" / "compose" / "docker-compose.yml"
    spec = yaml.safe_load(compose.read_text())
    assert set(SERVICES) | {"postgres"} == set(spec["services"])
    registry_env = spec["services"]["registry"]["environment"]
    assert registry_env["LORAFLEET_REGISTRY_DSN"].startswith("postgresql+psycopg://")
    for name in SERVICES:
        service = spec["services"][name]
        assert service["command"][0] == name
        assert service["environment"]["LORAFLEET_DATA_DIR"] == "/data"
        assert "lorafleet.healthcheck" in service["healthcheck"]["test"]
    if shutil.which("docker-compose"):  # Debian's package; CI installs it
        out = subprocess.run(
            ["docker-compose", "config", "-q"],
            cwd=compose.parent,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
