"""The CLI takes --data-dir and --config before or after the command."""

from __future__ import annotations

import pytest

from lorafleet.cli import build_parser


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
