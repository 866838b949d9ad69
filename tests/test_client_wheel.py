"""The client SDK installs with grpcio and protobuf alone and talks to a
running suite: the wheel is built from this checkout and installed into an
empty virtual environment (its dependencies come from the package index)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What `pip install lorafleet` may bring: the SDK, its two dependencies and
# theirs (grpcio needs typing-extensions), and the venv's own tools.
ALLOWED = {"lorafleet", "grpcio", "protobuf", "typing-extensions", "pip", "setuptools"}

CALL_THE_SUITE = """
import json, sys
import lorafleet
from lorafleet import Client
from lorafleet.v1 import registry_pb2

with Client(gateway=sys.argv[1], registry=sys.argv[2]) as client:
    listed = client.registry.ListArtifacts(
        registry_pb2.ListArtifactsRequest(name=sys.argv[3]), timeout=60
    )
print(json.dumps({
    "names": [a.name for a in listed.artifacts],
    "server_modules": sorted(
        m for m in sys.modules if m.split(".")[0] in ("services", "torch", "yaml")
    ),
}))
"""


def _run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=900, **kwargs
    )


@pytest.fixture(scope="module")
def client_env(tmp_path_factory) -> Path:
    """An empty venv with only the client wheel (and what it requires)."""
    work = tmp_path_factory.mktemp("client-wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in ("lorafleet", "services"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["-q", "-w", work / "dist", source]
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("lorafleet-*.whl")
    env = work / "env"
    venv.EnvBuilder(with_pip=True, clear=True).create(env)
    installed = _run([env / "bin" / "python", "-m", "pip", "install", "-q", wheel])
    assert installed.returncode == 0, installed.stderr
    return env


def test_the_client_installs_with_grpcio_and_protobuf_alone(client_env):
    listed = _run([client_env / "bin" / "python", "-m", "pip", "list", "--format=json"])
    assert listed.returncode == 0, listed.stderr
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"lorafleet", "grpcio", "protobuf"} <= names
    assert names <= ALLOWED, f"the client pulled in {sorted(names - ALLOWED)}"


def test_the_client_calls_a_running_suite(client_env, suite, base_model):
    called = _run(
        [client_env / "bin" / "python", "-c", CALL_THE_SUITE]
        + [suite.address("gateway"), suite.address("registry"), base_model.name],
        cwd=client_env,  # not the checkout: only the installed wheel is importable
    )
    assert called.returncode == 0, called.stderr
    reply = json.loads(called.stdout)
    assert reply["names"] == [base_model.name]
    assert reply["server_modules"] == []


def test_the_command_says_it_needs_the_server_extra(client_env):
    ran = _run([client_env / "bin" / "lorafleet", "up"], cwd=client_env)
    assert ran.returncode == 2
    assert "pip install 'lorafleet[server]'" in ran.stderr
    assert "Traceback" not in ran.stderr
