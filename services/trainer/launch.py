"""The `accelerate launch` command for a job that asks for more than one GPU.

DDP copies the whole model to every GPU and only all-reduces the (small) LoRA
gradients: fastest while the model fits comfortably. FSDP shards the frozen
base across GPUs, for bases too large for that. "auto" picks FSDP when the
base's parameters would take more than `FSDP_FRACTION` of one GPU's memory,
leaving the rest for activations.
"""

from __future__ import annotations

import math
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument

# Above this share of one GPU's memory taken by the base weights, auto uses FSDP.
FSDP_FRACTION = 0.5
# Bytes per base parameter as the trainer loads it on a GPU: bf16/fp16, or
# about half a byte in 4-bit for QLoRA.
BYTES_PER_PARAM = {"qlora": 0.5}
DEFAULT_BYTES_PER_PARAM = 2.0
# Fallback auto-wrap unit when the architecture names no transformer layer class.
MIN_WRAP_PARAMS = 100_000_000
CHILD_MODULE = "services.trainer.child"


@dataclass(frozen=True)
class LaunchPlan:
    """How to run one job across GPUs; `accelerate_command` turns it into argv."""

    num_processes: int
    strategy: str  # "ddp" or "fsdp"
    mixed_precision: str  # "no", "bf16" or "fp16"
    port: int
    layer_classes: tuple[str, ...] = ()


def choose_strategy(requested: str, param_bytes: float, gpu_memory_bytes: int) -> str:
    """ "ddp" or "fsdp" for config.distributed_strategy ("auto", "ddp", "fsdp")."""
    if requested in ("ddp", "fsdp"):
        return requested
    if requested != "auto":
        raise InvalidArgument(
            f"config.distributed_strategy {requested!r} is not one of auto, ddp, fsdp",
            field="config.distributed_strategy",
        )
    return "fsdp" if param_bytes > FSDP_FRACTION * gpu_memory_bytes else "ddp"


def launch_precision(mode: str, bf16_gpu: bool) -> str:
    """accelerate's --mixed_precision for config.mixed_precision on GPUs."""
    if mode == "auto":
        return "bf16" if bf16_gpu else "fp16"
    return mode


def accelerate_command(
    task_file: Path, plan: LaunchPlan, python: str = sys.executable
) -> list[str]:
    """argv running the training child under `accelerate launch` with `plan`."""
    argv = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(plan.num_processes),
        "--num_machines",
        "1",
        "--main_process_port",
        str(plan.port),
        "--mixed_precision",
        plan.mixed_precision,
        "--dynamo_backend",
        "no",
    ]
    if plan.strategy == "ddp":
        argv.append("--multi_gpu")
    elif plan.strategy == "fsdp":
        argv += [
            "--use_fsdp",
            "--fsdp_version",
            "1",
            "--fsdp_sharding_strategy",
            "FULL_SHARD",
            # PEFT mixes frozen and trainable parameters in one wrapped unit.
            "--fsdp_use_orig_params",
            "true",
            # Adapter checkpoints stay plain adapter_model.safetensors files.
            "--fsdp_state_dict_type",
            "FULL_STATE_DICT",
            "--fsdp_sync_module_states",
            "true",
            "--fsdp_offload_params",
            "false",
            "--fsdp_backward_prefetch",
            "BACKWARD_PRE",
        ]
        if plan.layer_classes:
            argv += [
                "--fsdp_auto_wrap_policy",
                "TRANSFORMER_BASED_WRAP",
                "--fsdp_transformer_layer_cls_to_wrap",
                ",".join(plan.layer_classes),
            ]
        else:
            argv += [
                "--fsdp_auto_wrap_policy",
                "SIZE_BASED_WRAP",
                "--fsdp_min_num_params",
                str(MIN_WRAP_PARAMS),
            ]
    else:
        raise InvalidArgument(f"unknown distributed strategy {plan.strategy!r}")
    return argv + ["-m", CHILD_MODULE, str(task_file)]


def plan_launch(
    base_dir: Path,
    config: dict,
    *,
    gpu_memory_bytes: int,
    bf16_gpu: bool,
    port: int | None = None,
) -> LaunchPlan:
    """The plan for a TrainConfig dict: strategy from the base's size on a GPU."""
    params = parameter_count(base_dir)
    per_param = BYTES_PER_PARAM.get(config.get("method", ""), DEFAULT_BYTES_PER_PARAM)
    strategy = choose_strategy(
        config.get("distributed_strategy", "auto"), params * per_param, gpu_memory_bytes
    )
    return LaunchPlan(
        num_processes=int(config["num_gpus"]),
        strategy=strategy,
        mixed_precision=launch_precision(
            config.get("mixed_precision", "auto"), bf16_gpu
        ),
        port=port or free_port(),
        layer_classes=tuple(layer_classes(base_dir)) if strategy == "fsdp" else (),
    )


def parameter_count(base_dir: Path) -> int:
    """Parameters in the model's safetensors files, read from their headers only."""
    from safetensors import safe_open

    total = 0
    for path in sorted(base_dir.glob("*.safetensors")):
        with safe_open(str(path), "pt") as weights:
            for name in weights.keys():
                total += math.prod(weights.get_slice(name).get_shape())
    return total


def layer_classes(base_dir: Path) -> list[str]:
    """The architecture's transformer block classes (its `_no_split_modules`)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        config = AutoConfig.from_pretrained(str(base_dir), local_files_only=True)
        model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except (OSError, ValueError, KeyError):
        return []
    return list(getattr(model_class, "_no_split_modules", None) or [])


def free_port() -> int:
    """A TCP port free right now on this host, for the rank-0 rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
