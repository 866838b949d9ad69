"""The CLI takes --data-dir and --config before or after the command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.cli.main import build_parser


@pytest.mark.parametrize(
    ("argv", "data_dir"),
    [
        (["up", "--data-dir", "/srv/lf", "--base-port", "7000"], "/srv/lf"),
        (["--data-dir", "/srv/lf", "up"], "/srv/lf"),
        (["--data-dir", "/a", "up", "--data-dir", "/b"], "/b"),
        (["up"], None),
        (["models", "import", "smollm2", "--name", "m", "--data-dir", "/m"], "/m"),
        (["registry", "retain", "n", "--keep-last", "2", "--data-dir", "/r"], "/r"),
        (["demo", "--data-dir", "/d", "--steps", "3"], "/d"),
    ],
)
def test_data_dir_goes_before_or_after_the_command(argv, data_dir):
    assert build_parser().parse_args(argv).data_dir == data_dir


def test_config_after_the_command():
    args = build_parser().parse_args(["up", "--config", "lf.yaml"])
    assert args.config == "lf.yaml"


# A command whose output outgrows the pipe: what `rollout watch` does over time.
_LONG_OUTPUT_COMMAND = """
import sys
import services.cli.main as cli

class Args:
    func = staticmethod(lambda args: print("event\\n" * 100_000))

class Parser:
    def parse_args(self, argv):
        return Args()

cli.build_parser = Parser
sys.exit(cli.main([]))
"""


def test_a_reader_that_goes_away_ends_the_cli_quietly():
    """`lorafleet rollout watch … | head` must not end in a BrokenPipeError
    traceback: `main` stops quietly with exit code 1."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write the CLI makes now fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-c", _LONG_OUTPUT_COMMAND],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
