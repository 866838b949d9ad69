"""Inference engines by name: the `inference_engine` setting picks one.

Each engine is one module behind services.inference.engine.Engine, built from
the service's config here. Only engines that a test runs are listed (a GPU
engine such as vLLM joins when a machine to test it on does).
"""

from __future__ import annotations

from collections.abc import Callable

from services.common.config import Config, ConfigError
from services.inference import torch_config
from services.inference.engine import Engine, Resolver

ENGINES: dict[str, Callable[[Config, Resolver], Engine]] = {
    "torch": torch_config.from_config,
}


def make_engine(config: Config, resolve: Resolver) -> Engine:
    build = ENGINES.get(config.inference_engine)
    if build is None:
        raise ConfigError(
            f"unknown inference_engine {config.inference_engine!r}; known: "
            f"{', '.join(sorted(ENGINES))} (LORAFLEET_INFERENCE_ENGINE)"
        )
    return build(config, resolve)
