"""What this trainer can run: checked at Start, before a job is queued.

A config that needs a backend the machine lacks (QLoRA without a working
bitsandbytes, bf16/fp16 without a GPU, more GPUs than the replica has) is
refused with FAILED_PRECONDITION naming the missing piece and the fix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from services.common.errors import FailedPrecondition
from services.trainer.spec import TrainConfig


@dataclass(frozen=True)
class Capabilities:
    """Backends present on this trainer replica."""

    device: str  # "cuda" or "cpu"
    gpus: int  # GPUs this replica may hand to jobs
    bf16_gpu: bool  # the GPU does bf16
    bitsandbytes: str  # "" when missing, else its version
    bitsandbytes_error: str = ""


@functools.cache
def _bitsandbytes() -> tuple[str, str]:
    try:
        import bitsandbytes  # noqa: F401

        return bitsandbytes.__version__, ""
    except Exception as exc:  # ImportError, or a broken native library
        return "", f"{type(exc).__name__}: {exc}"


def detect(device: str, gpu_limit: int = -1) -> Capabilities:
    """The replica's capabilities; `gpu_limit` -1 means every visible GPU."""
    import torch

    visible = torch.cuda.device_count() if device.startswith("cuda") else 0
    gpus = visible if gpu_limit < 0 else min(gpu_limit, visible)
    bf16 = bool(gpus) and torch.cuda.is_bf16_supported()
    version, error = _bitsandbytes()
    return Capabilities(
        device="cuda" if gpus else "cpu",
        gpus=gpus,
        bf16_gpu=bf16,
        bitsandbytes=version,
        bitsandbytes_error=error,
    )


def check(cfg: TrainConfig, caps: Capabilities) -> None:
    """Raises FailedPrecondition when `cfg` needs something `caps` lacks."""
    if cfg.method == "qlora" and not caps.bitsandbytes:
        raise FailedPrecondition(
            "method QLORA needs bitsandbytes to load the base in 4-bit, and it "
            f"is not usable here ({caps.bitsandbytes_error}); install "
            "bitsandbytes>=0.45 or train with method LORA",
        )
    if cfg.mixed_precision in ("bf16", "fp16") and not caps.gpus:
        raise FailedPrecondition(
            f"mixed_precision {cfg.mixed_precision.upper()} needs a GPU and this "
            "trainer has none; use MIXED_PRECISION_AUTO (fp32 on CPU) or NO",
        )
    if cfg.mixed_precision == "bf16" and not caps.bf16_gpu:
        raise FailedPrecondition(
            "mixed_precision BF16 needs a GPU with bf16 support (Ampere or "
            "newer); use FP16 or AUTO",
        )
    if cfg.num_gpus > max(caps.gpus, 0) and cfg.num_gpus > 0:
        raise FailedPrecondition(
            f"config.num_gpus {cfg.num_gpus} asks for more GPUs than this trainer "
            f"has ({caps.gpus}); lower num_gpus or run on a larger trainer",
        )
