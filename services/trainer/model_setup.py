"""Base model + LoRA config -> the PEFT model to train.

Causal-LM tasks adapt the language model; classification adds a sequence
classification head (trained in full and saved with the adapter). QLoRA loads
the base in 4-bit NF4 (bitsandbytes) and trains the adapter on top of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument
from services.common.modeling import (
    check_modules_to_save,
    default_target_modules,
    load_causal_lm,
    load_sequence_classifier,
    model_type_of,
    nf4_config,
)
from services.trainer.data import PreparedData
from services.trainer.spec import TrainConfig

# Largest |packed - alone| / max|logit| the packing probe accepts, by dtype.
PACKING_TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2, "float16": 1e-2}


def build_peft_model(
    base_dir: Path, cfg: TrainConfig, device: str, data: PreparedData | None = None
) -> tuple[Any, list[str] | str]:
    """Loads the base and wraps it in a fresh LoRA adapter: (model, targets).

    `data` is the prepared dataset: its task picks the head (label count for
    classification); facts the adapter's metadata should carry are added to
    `data.extra` (e.g. "base_quantization": "nf4").
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    task = data.task if data is not None else "text"
    quantization = None
    if cfg.method == "qlora":
        quantization = nf4_config(_compute_dtype(device))
    if task == "classification":
        assert data is not None
        model = load_sequence_classifier(
            base_dir,
            data.labels,
            data.pad_token_id,
            device,
            quantization=quantization,
        )
        peft_task = "SEQ_CLS"
    else:
        model = load_causal_lm(base_dir, device, quantization=quantization)
        peft_task = "CAUSAL_LM"
    # No KV cache in training; transformers also only detects packed rows
    # (restarting position ids) when no cache is passed.
    model.config.use_cache = False
    if quantization is not None:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.gradient_checkpointing
        )
        if data is not None:
            data.extra["base_quantization"] = "nf4"
            data.extra["base_compute_dtype"] = str(
                quantization.bnb_4bit_compute_dtype
            ).removeprefix("torch.")
    if cfg.packing:
        check_packing_isolation(model, model_type_of(base_dir))
    check_modules_to_save(
        cfg.modules_to_save, [name for name, _ in model.named_modules() if name]
    )
    targets = cfg.target_modules or default_target_modules(model_type_of(base_dir))
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=list(cfg.modules_to_save) or None,
        use_rslora=cfg.method == "rslora",
        use_dora=cfg.method == "dora",
        task_type=peft_task,
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise InvalidArgument(
            f"cannot apply LoRA to target_modules {targets}: {exc}",
            field="config.target_modules",
        ) from exc
    return model, targets


def _compute_dtype(device: str) -> Any:
    """bf16 on a GPU that has it, else fp32 (CPU kernels and older GPUs)."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_packing_isolation(model: Any, model_type: str) -> None:
    """Refuses packing unless two packed sequences score as they do alone."""
    problem = packing_leak(model, model_type)
    if problem:
        raise InvalidArgument(problem, field="config.packing")


def packing_leak(model: Any, model_type: str) -> str:
    """Why packed examples would not stay apart in `model` ("" when they do).

    Falcon, OPT and Bloom in transformers 5 let packed sequences attend to
    each other (their attention ignores restarting position ids); a short
    probe on the real model catches that for any architecture. It draws from
    its own generator, so probing leaves the training RNG as it was.
    """
    import torch

    param = next(model.parameters())
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    first = torch.randint(0, vocab, (5,), generator=gen)
    second = torch.randint(0, vocab, (7,), generator=gen)
    positions = torch.cat([torch.arange(5), torch.arange(7)])[None]
    device = param.device if param.device.type != "meta" else "cpu"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = model(
                input_ids=torch.cat([first, second])[None].to(device),
                position_ids=positions.to(device),
                use_cache=False,
            ).logits[0]
            alone = torch.cat(
                [
                    model(input_ids=seq[None].to(device), use_cache=False).logits[0]
                    for seq in (first, second)
                ]
            )
    except (TypeError, ValueError, RuntimeError) as exc:
        return (
            f"config.packing: a {model_type or 'this'} model cannot run packed "
            f"rows ({exc}); turn packing off and use group_by_length"
        )
    finally:
        model.train(was_training)
    gap = float((packed.float() - alone.float()).abs().max())
    scale = max(float(alone.float().abs().max()), 1.0)
    tolerance = PACKING_TOLERANCE.get(str(alone.dtype).removeprefix("torch."), 1e-2)
    if gap / scale > tolerance:
        return (
            f"config.packing: {model_type or 'this'} models let packed examples "
            f"attend to each other (logits differ by {gap:.3g} from the examples "
            "run alone), so packing would leak between examples; turn packing "
            "off and use group_by_length to cut padding instead"
        )
    return ""
