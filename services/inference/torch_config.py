"""The torch engine built from the service's config (torch's threads set first)."""

from __future__ import annotations

from services.common.config import Config, ConfigError
from services.common.modeling import resolve_device
from services.inference.engine import Resolver
from services.inference.scheduler import SchedulerSettings
from services.inference.torch_engine import TorchEngine


def check_settings(settings: SchedulerSettings) -> None:
    for name in ("max_batch", "max_queue", "prefill_tokens_per_step"):
        value = getattr(settings, name)
        if value < 1:
            env = {"prefill_tokens_per_step": "PREFILL_TOKENS"}.get(name, name.upper())
            raise ConfigError(
                f"inference {name} must be at least 1, got {value} "
                f"(LORAFLEET_INFERENCE_{env})"
            )


def apply_cpu_threads(threads: int) -> int:
    """Sets torch's intra-op threads (0 keeps torch's default); returns the
    count in use. Called before any model loads, so every op uses it."""
    if threads < 0:
        raise ConfigError(
            f"inference_threads must be 0 (one per core) or more, got {threads} "
            "(LORAFLEET_INFERENCE_THREADS)"
        )
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def from_config(config: Config, resolve: Resolver) -> TorchEngine:
    settings = SchedulerSettings(
        max_batch=config.inference_max_batch,
        max_queue=config.inference_max_queue,
        prefill_tokens_per_step=config.inference_prefill_tokens,
        prefix_cache_bytes=config.inference_prefix_cache_mb * 1024 * 1024,
    )
    check_settings(settings)
    apply_cpu_threads(config.inference_threads)
    return TorchEngine(
        resolve,
        resolve_device(config.device),
        config.max_loaded_models,
        config.max_new_tokens_limit,
        settings,
        adapter_budget_bytes=config.inference_adapter_budget_mb * 1024 * 1024,
        resolve_ttl_s=config.inference_resolve_ttl_s,
    )
