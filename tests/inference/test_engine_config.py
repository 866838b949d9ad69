"""The inference service's engine settings: CPU threads, engine name, batch sizes.

Each case runs in its own process: torch's thread count is process-wide and
the rest of the suite must keep its own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import sys
from services.common.config import load_config
from services.inference.torch_config import apply_cpu_threads

config = load_config(env={"LORAFLEET_INFERENCE_THREADS": sys.argv[1]})
print(config.inference_threads, apply_cpu_threads(config.inference_threads))
"""


def _probe(value: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, value],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return done.stdout.split()


def test_one_thread_by_default_and_as_configured():
    assert _probe("1") == ["1", "1"]
    # 0 keeps torch's own default (one per core), whatever it is in a fresh
    # process (this one's may have been set by an in-process service).
    fresh = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.strip()
    assert _probe("0") == ["0", fresh]


def test_the_default_config_uses_one_thread():
    from services.common.config import load_config

    assert load_config(env={}).inference_threads == 1


def test_a_negative_count_stops_the_service_with_a_message(tmp_path):
    env = dict(os.environ, LORAFLEET_INFERENCE_THREADS="-2")
    env["LORAFLEET_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "services.inference", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 1
    assert "inference_threads must be 0 (one per core) or more, got -2" in done.stderr
    assert "LORAFLEET_INFERENCE_THREADS" in done.stderr


def test_apply_refuses_a_negative_count_before_touching_torch():
    import torch

    from services.common.config import ConfigError
    from services.inference.torch_config import apply_cpu_threads

    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match="LORAFLEET_INFERENCE_THREADS"):
        apply_cpu_threads(-1)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"LORAFLEET_INFERENCE_ENGINE": "vllm"},
            "unknown inference_engine 'vllm'; known: torch",
        ),
        (
            {"LORAFLEET_INFERENCE_MAX_BATCH": "0"},
            "inference max_batch must be at least 1, got 0",
        ),
    ],
)
def test_bad_engine_settings_stop_the_service_with_a_message(tmp_path, env, message):
    done = subprocess.run(
        [sys.executable, "-m", "services.inference", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, LORAFLEET_DATA_DIR=str(tmp_path), **env),
    )
    assert done.returncode == 1
    assert message in done.stderr
