"""`python -m services.registry` is wired to the shared service launcher."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_module_entry_point_parses_arguments():
    result = subprocess.run(
        [sys.executable, "-m", "services.registry", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "lorafleet serve registry" in result.stdout and "--data-dir" in result.stdout
