"""The `accelerate launch` command for multi-GPU jobs (built, not run: no GPUs here)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from services.trainer import launch, runner
from services.trainer.launch import LaunchPlan, accelerate_command
from tests.trainer.runs import config, task_for

TASK = Path("/runs/job-1/task.json")
HEAD = [sys.executable, "-m", "accelerate.commands.launch"]
GIB = 1024**3


def _parsed(argv: list[str]):
    """accelerate's own parser reads the command back (flags exist, values fit)."""
    from accelerate.commands.launch import launch_command_parser

    assert argv[:3] == HEAD
    return launch_command_parser().parse_args(argv[3:])


def test_ddp_command():
    argv = accelerate_command(TASK, LaunchPlan(2, "ddp", "bf16", 29501))
    assert argv == HEAD + [
        "--num_processes", "2",
        "--num_machines", "1",
        "--main_process_port", "29501",
        "--mixed_precision", "bf16",
        "--dynamo_backend", "no",
        "--multi_gpu",
        "-m", "services.trainer.child", str(TASK),
    ]  # fmt: skip
    args = _parsed(argv)
    assert args.multi_gpu and not args.use_fsdp and args.module
    assert args.num_processes == 2 and args.main_process_port == 29501
    assert args.training_script == "services.trainer.child"
    assert args.training_script_args == [str(TASK)]


def test_fsdp_command():
    plan = LaunchPlan(4, "fsdp", "fp16", 29502, ("LlamaDecoderLayer",))
    argv = accelerate_command(TASK, plan)
    assert argv == HEAD + [
        "--num_processes", "4",
        "--num_machines", "1",
        "--main_process_port", "29502",
        "--mixed_precision", "fp16",
        "--dynamo_backend", "no",
        "--use_fsdp",
        "--fsdp_version", "1",
        "--fsdp_sharding_strategy", "FULL_SHARD",
        "--fsdp_use_orig_params", "true",
        "--fsdp_state_dict_type", "FULL_STATE_DICT",
        "--fsdp_sync_module_states", "true",
        "--fsdp_offload_params", "false",
        "--fsdp_backward_prefetch", "BACKWARD_PRE",
        "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
        "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer",
        "-m", "services.trainer.child", str(TASK),
    ]  # fmt: skip
    args = _parsed(argv)
    assert args.use_fsdp and not args.multi_gpu
    assert args.fsdp_transformer_layer_cls_to_wrap == "LlamaDecoderLayer"
    assert args.fsdp_use_orig_params == "true"


def test_fsdp_without_a_layer_class_wraps_by_size():
    argv = accelerate_command(TASK, LaunchPlan(2, "fsdp", "bf16", 29503))
    at = argv.index("--fsdp_auto_wrap_policy")
    assert argv[at : at + 4] == [
        "--fsdp_auto_wrap_policy", "SIZE_BASED_WRAP",
        "--fsdp_min_num_params", str(launch.MIN_WRAP_PARAMS),
    ]  # fmt: skip
    assert "--fsdp_transformer_layer_cls_to_wrap" not in argv
    _parsed(argv)


def test_auto_strategy_follows_model_size(tiny_model_dir):
    params = launch.parameter_count(tiny_model_dir)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert params == sum(p.numel() for p in model.parameters())
    weights = params * launch.DEFAULT_BYTES_PER_PARAM  # bf16 on the GPUs

    cfg = {"num_gpus": 2, "distributed_strategy": "auto", "mixed_precision": "auto"}
    roomy = launch.plan_launch(
        tiny_model_dir, cfg, gpu_memory_bytes=80 * GIB, bf16_gpu=True, port=29504
    )
    assert roomy == LaunchPlan(2, "ddp", "bf16", 29504, ())
    # Weights over half of one GPU: shard them, wrapping each decoder layer.
    tight = launch.plan_launch(
        tiny_model_dir,
        cfg,
        gpu_memory_bytes=int(weights * 1.5),
        bf16_gpu=False,
        port=29505,
    )
    assert tight == LaunchPlan(2, "fsdp", "fp16", 29505, ("LlamaDecoderLayer",))
    # QLoRA's 4-bit base fits where the bf16 one does not.
    qlora = launch.plan_launch(
        tiny_model_dir,
        {**cfg, "method": "qlora"},
        gpu_memory_bytes=int(weights * 1.5),
        bf16_gpu=True,
        port=29506,
    )
    assert qlora.strategy == "ddp"
    # An explicit choice wins over the size rule.
    forced = launch.plan_launch(
        tiny_model_dir,
        {**cfg, "distributed_strategy": "ddp", "mixed_precision": "no"},
        gpu_memory_bytes=1,
        bf16_gpu=True,
        port=29507,
    )
    assert forced == LaunchPlan(2, "ddp", "no", 29507, ())


@pytest.mark.parametrize(
    ("requested", "weights", "expected"),
    [
        ("auto", 39 * GIB, "ddp"),
        ("auto", 41 * GIB, "fsdp"),
        ("ddp", 70 * GIB, "ddp"),
        ("fsdp", 1, "fsdp"),
    ],
)
def test_choose_strategy(requested, weights, expected):
    assert launch.choose_strategy(requested, weights, 80 * GIB) == expected


def test_runner_launches_multi_gpu_jobs_through_accelerate(
    tiny_model_dir, demo_dataset_path, tmp_path, monkeypatch
):
    monkeypatch.setattr(runner, "gpu_facts", lambda: (80 * GIB, True))
    multi = task_for(tiny_model_dir, demo_dataset_path, tmp_path, config(num_gpus=2))
    argv = runner.command_for(multi, TASK)
    args = _parsed(argv)
    assert args.multi_gpu and args.num_processes == 2
    assert args.mixed_precision == "bf16"
    assert argv[-3:] == ["-m", "services.trainer.child", str(TASK)]
    single = task_for(tiny_model_dir, demo_dataset_path, tmp_path, config(num_gpus=1))
    assert runner.command_for(single, TASK) == [
        sys.executable, "-m", "services.trainer.child", str(TASK)
    ]  # fmt: skip


def test_free_port_can_be_bound():
    port = launch.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
