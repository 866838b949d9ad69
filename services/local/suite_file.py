"""Where a running `lorafleet up` can be found, so the other commands talk
to it without being told its ports and data directory again.

`lorafleet up` publishes what it started once every service is SERVING:
`<data_dir>/suite.json` (the addresses it chose, its data and staging
directories, its pid) and the same record as the per-user pointer
`$XDG_STATE_HOME/lorafleet/current-suite.json` (default
`~/.local/state/lorafleet/`), which names the newest suite started. Both go
away when it stops. A record whose process is gone (a `kill -9`, a reboot)
or that was written on another host is ignored, never trusted.

A command resolves a service's address in this order: its own flag
(`--registry`, `--gateway`), an address set in the config or environment
(`LORAFLEET_REGISTRY_ADDRESS`), the suite running on the data directory it
was given (`--data-dir`, `LORAFLEET_DATA_DIR`, the config file), then, when
it was given none, the newest running suite, then the default ports.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services.common.paths import write_atomic

SUITE_FILE = "suite.json"
POINTER_FILE = "current-suite.json"
FORMAT = 1


@dataclass(frozen=True)
class RunningSuite:
    """What one `lorafleet up` started."""

    pid: int
    hostname: str
    data_dir: str  # absolute
    staging_dir: str  # absolute: where files to register are put first
    addresses: dict[str, str] = field(default_factory=dict)  # name -> host:port
    format: int = FORMAT
    metrics: dict[str, str] = field(default_factory=dict)  # name -> /metrics URL

    def address_of(self, service: str) -> str | None:
        return self.addresses.get(service)


def user_state_dir(env: dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/lorafleet`, else `~/.local/state/lorafleet`."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "lorafleet"


def publish(suite: RunningSuite, env: dict[str, str] | None = None) -> list[Path]:
    """Writes the suite's record and the user pointer; returns both paths.
    The pointer is best effort: an unwritable home does not stop `up`."""
    text = json.dumps(asdict(suite), indent=2, sort_keys=True) + "\n"
    own = Path(suite.data_dir) / SUITE_FILE
    write_atomic(own, text.encode())
    written = [own]
    pointer = user_state_dir(env) / POINTER_FILE
    try:
        write_atomic(pointer, text.encode())
        written.append(pointer)
    except OSError:
        pass
    return written


def withdraw(data_dir: Path, pid: int, env: dict[str, str] | None = None) -> None:
    """Removes the records that name this process (a newer `up` elsewhere
    keeps its pointer)."""
    for path in (Path(data_dir) / SUITE_FILE, user_state_dir(env) / POINTER_FILE):
        found = read(path, check_alive=False)
        if found is not None and found.pid == pid:
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def read(path: Path, *, check_alive: bool = True) -> RunningSuite | None:
    """The record at `path`, or None when there is none, it is unreadable,
    or (with `check_alive`) its suite is not running on this host."""
    try:
        raw = json.loads(Path(path).read_text())
        suite = RunningSuite(
            pid=int(raw["pid"]),
            hostname=str(raw["hostname"]),
            data_dir=str(raw["data_dir"]),
            staging_dir=str(raw["staging_dir"]),
            addresses={str(k): str(v) for k, v in dict(raw["addresses"]).items()},
            format=int(raw.get("format", FORMAT)),
            metrics={str(k): str(v) for k, v in dict(raw.get("metrics", {})).items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    here = suite.hostname == socket.gethostname()
    if check_alive and not (here and _alive(suite.pid)):
        return None
    return suite


def find(
    data_dir: Path, *, data_dir_given: bool, env: dict[str, str] | None = None
) -> RunningSuite | None:
    """The suite running on `data_dir`; when no data directory was given,
    else the newest suite this user started."""
    own = read(Path(data_dir) / SUITE_FILE)
    if own is not None or data_dir_given:
        return own
    return read(user_state_dir(env) / POINTER_FILE)
