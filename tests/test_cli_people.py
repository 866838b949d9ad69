"""The CLI for people: remote errors are one line plus their details and
exit 2, commands find the suite `lorafleet up` runs, `models import` fails
before converting anything when no registry answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

from services.cli.deployments import address
from services.cli.main import main
from services.local import suite_file
from services.local.launcher import free_port_block
from services.local.suite_file import RunningSuite


def _record(data_dir: Path, pid: int | None = None, **addresses) -> RunningSuite:
    return RunningSuite(
        pid=os.getpid() if pid is None else pid,
        hostname=socket.gethostname(),
        data_dir=str(data_dir.resolve()),
        staging_dir=str((data_dir / "staging").resolve()),
        addresses=addresses or {"registry": "127.0.0.1:61001"},
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def state_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    for var in ("LORAFLEET_DATA_DIR", "LORAFLEET_CONFIG", "LORAFLEET_REGISTRY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_a_published_suite_is_found_and_withdrawn(tmp_path, state_home):
    data = tmp_path / "data"
    written = suite_file.publish(_record(data, registry="127.0.0.1:61001"))
    assert written == [
        data / "suite.json",
        state_home / "lorafleet" / "current-suite.json",
    ]
    found = suite_file.find(data, data_dir_given=True)
    assert found is not None and found.address_of("registry") == "127.0.0.1:61001"
    # No data directory given: the newest suite this user started.
    elsewhere = tmp_path / "other"
    assert suite_file.find(elsewhere, data_dir_given=False) == found
    # A data directory given that runs no suite is not swapped for another.
    assert suite_file.find(elsewhere, data_dir_given=True) is None
    suite_file.withdraw(data, os.getpid())
    assert not (data / "suite.json").exists()
    assert not (state_home / "lorafleet" / "current-suite.json").exists()


def test_a_record_of_a_dead_or_foreign_process_is_ignored(tmp_path, state_home):
    data = tmp_path / "data"
    suite_file.publish(_record(data, pid=_dead_pid()))
    assert suite_file.find(data, data_dir_given=True) is None
    assert suite_file.find(tmp_path / "x", data_dir_given=False) is None
    foreign = _record(data)
    suite_file.publish(
        RunningSuite(**{**foreign.__dict__, "hostname": "not-" + foreign.hostname})
    )
    assert suite_file.find(data, data_dir_given=True) is None
    (data / "suite.json").write_text("{not json")
    assert suite_file.find(data, data_dir_given=True) is None
    # A newer suite's pointer is not removed by an older one stopping.
    suite_file.publish(_record(data))
    suite_file.withdraw(data, os.getpid() + 1)
    assert (state_home / "lorafleet" / "current-suite.json").exists()


def test_addresses_come_from_flag_then_config_then_the_running_suite(
    tmp_path, state_home, monkeypatch
):
    data = tmp_path / "data"
    suite_file.publish(_record(data, registry="127.0.0.1:61001", gateway="h:1"))
    args = Namespace(data_dir=str(data), config=None, registry=None, gateway=None)
    assert address(args, "registry") == "127.0.0.1:61001"
    assert address(args, "gateway") == "h:1"
    # Not recorded: the default port.
    assert address(args, "trainer") == "127.0.0.1:50052"
    args.registry = "flag:1"
    assert address(args, "registry") == "flag:1"
    args.registry = None
    monkeypatch.setenv("LORAFLEET_REGISTRY_ADDRESS", "env:2")
    assert address(args, "registry") == "env:2"
    monkeypatch.delenv("LORAFLEET_REGISTRY_ADDRESS")
    # From another directory with no --data-dir: the newest running suite.
    monkeypatch.chdir(tmp_path)
    bare = Namespace(data_dir=None, config=None, registry=None)
    assert address(bare, "registry") == "127.0.0.1:61001"


def test_import_fails_before_converting_when_no_registry_answers(
    tmp_path, state_home, tiny_model_dir, capsys
):
    data = tmp_path / "data"
    port = free_port_block(1)
    argv = ["models", "import", str(tiny_model_dir), "--name", "tiny"]
    argv += ["--data-dir", str(data), "--registry", f"127.0.0.1:{port}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no registry answers at 127.0.0.1:{port} ")
    assert "lorafleet up" in err and "Traceback" not in err
    assert not (data / "staging").exists()  # nothing was converted


def test_import_of_a_missing_file_is_one_line(tmp_path, state_home, capsys):
    argv = ["models", "import", str(tmp_path / "nope.gguf"), "--name", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not found" in err


def test_up_refuses_a_data_dir_a_suite_runs_on(tmp_path, state_home, capsys):
    data = tmp_path / "data"
    suite_file.publish(_record(data, gateway="127.0.0.1:61000"))
    assert main(["up", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"a suite (pid {os.getpid()}) already runs on {data.resolve()}" in err
    assert not (data / "logs").exists()  # nothing was started


def test_a_remote_error_is_one_line_and_its_field_violations(suite, capsys):
    argv = ["registry", "retain", "no-such-name", "--keep-last", "0"]
    assert main(argv + ["--registry", suite.address("registry")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: INVALID_ARGUMENT: keep_last must be at least 1, got 0",
        "  field keep_last: keep_last must be at least 1, got 0",
    ]


def test_an_unreachable_service_is_one_line_too(capsys, state_home):
    port = free_port_block(1)
    argv = ["registry", "gc", "--dry-run", "--registry", f"127.0.0.1:{port}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: UNAVAILABLE: ") and "Traceback" not in err
