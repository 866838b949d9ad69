"""The training loop: prepared data + PEFT model -> transformers Trainer -> adapter.

Data preparation lives in `data.py`, model construction in `model_setup.py`,
checkpoint bookkeeping in `checkpoints.py`; `runner.py` runs this in a child
process.

Uses transformers' Trainer (well-kept: schedules, accumulation, mixed precision,
checkpoints that restore optimizer, scheduler, RNG and data position) with
callbacks that report progress, honour cancellation and keep the best
checkpoint by eval loss.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.common.datasets import CAUSAL_TASKS
from services.common.errors import Cancelled, FailedPrecondition
from services.common.modeling import load_tokenizer
from services.trainer import checkpoints, native_dropout
from services.trainer.answer_loss import supports_labelled_logits
from services.trainer.auto_packing import resolve_packing
from services.trainer.data import prepare_data
from services.trainer.lora_dropout import use_saved_mask_dropout
from services.trainer.model_setup import build_peft_model
from services.trainer.objectives import trainer_class_for
from services.trainer.spec import TrainConfig
from services.trainer.speed import SpeedOptions

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]

# Checkpoints kept besides the best one: the newest is what a resume needs, the
# one before it covers a kill while the newest is being written.
KEEP_CHECKPOINTS = 2


@dataclass
class TrainingOutcome:
    metrics: dict[str, float]
    task: str
    target_modules: list[str] | str
    train_rows: int
    eval_rows: int
    dropped_rows: int
    total_steps: int
    extra: dict = field(default_factory=dict)


def precision_args(mode: str, device: str, bf16_gpu: bool) -> dict[str, bool]:
    """TrainingArguments bf16/fp16 for `mixed_precision` on `device`.

    auto: bf16 on a bf16-capable GPU, fp16 on another GPU, fp32 on CPU.
    """
    on_gpu = device.startswith("cuda")
    if mode in ("bf16", "fp16") and not on_gpu:
        raise FailedPrecondition(
            f"mixed_precision {mode.upper()} needs a GPU and this run is on "
            f"{device}; use MIXED_PRECISION_AUTO (fp32 on CPU) or NO"
        )
    if mode == "auto":
        mode = ("bf16" if bf16_gpu else "fp16") if on_gpu else "no"
    return {"bf16": mode == "bf16", "fp16": mode == "fp16"}


def fine_tune(
    base_dir: Path,
    dataset_file: Path,
    out_dir: Path,
    cfg: TrainConfig,
    *,
    device: str,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
    checkpoint_dir: Path | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> TrainingOutcome:
    """Trains a LoRA adapter and saves it (safetensors + PEFT config) to `out_dir`.

    Checkpoints go to `checkpoint_dir` every `cfg.checkpoint_steps` optimiser
    steps; a run finding a complete checkpoint of the same inputs and config
    there resumes from the newest one and ends with the byte-identical adapter
    an uninterrupted run gives (on CPU). With `cfg.eval_steps` the adapter saved
    is the best checkpoint by eval loss; `early_stopping_patience` stops a run
    whose eval loss stopped improving. `extra["resumed_from_step"]` says where
    the run started.
    """
    import torch
    from transformers import (
        EarlyStoppingCallback,
        PrinterCallback,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    # Seeds python, numpy and torch before LoRA init: the same seed, data and
    # config give a byte-identical adapter on CPU (Trainer reseeds for dropout
    # and, via data_seed, the dataloader order).
    set_seed(cfg.seed)
    bf16_gpu = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    precision = precision_args(cfg.mixed_precision, device, bf16_gpu)
    tokenizer = load_tokenizer(base_dir)
    data = prepare_data(tokenizer, dataset_file, cfg)
    model, targets = build_peft_model(base_dir, cfg, device, data)
    cfg = resolve_packing(cfg, data, model, base_dir)
    speed = SpeedOptions.from_env()
    if speed.saved_mask_dropout:
        use_saved_mask_dropout(model, native_noise=speed.native_dropout)
    native_noise = (
        speed.saved_mask_dropout
        and speed.native_dropout
        and device == "cpu"
        and cfg.dropout > 0
        and native_dropout.available()
    )
    labelled_logits = (
        speed.labelled_logits
        and data.task in CAUSAL_TASKS
        and supports_labelled_logits(model)
    )

    # Under `accelerate launch` every optimiser step takes a batch per process.
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(
        len(data.train) / (cfg.batch_size * cfg.gradient_accumulation_steps * processes)
    )
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    evaluating = bool(cfg.eval_steps and data.eval)
    started = time.time()

    class Progress(TrainerCallback):
        """Step, loss, eval loss, learning rate, throughput and ETA on each log."""

        def on_train_begin(self, args, state, control, **kw):
            # A resumed run measures its own speed, not the steps it skipped.
            self.t0 = time.time()
            self.step0 = state.global_step
            self.tokens0 = float(state.num_input_tokens_seen or 0)

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero:
                return
            now = time.time()
            metrics = {
                k: float(v)
                for k, v in (logs or {}).items()
                if isinstance(v, (int, float)) and k != "epoch"
            }
            metrics["epoch"] = float(state.epoch or 0.0)
            metrics["elapsed_s"] = now - started
            run_s = max(now - getattr(self, "t0", started), 1e-9)
            tokens = float(state.num_input_tokens_seen or 0)
            if tokens > getattr(self, "tokens0", 0.0):
                metrics["tokens_per_s"] = (tokens - self.tokens0) / run_s
            done = state.global_step - getattr(self, "step0", 0)
            if done > 0:
                metrics["eta_s"] = (
                    run_s / done * max(total_steps - state.global_step, 0)
                )
            on_progress(state.global_step, total_steps, metrics)

        def on_step_end(self, args, state, control, **kw):
            if should_stop():
                control.should_training_stop = True

    class KeepBest(TrainerCallback):
        """Saves a checkpoint at every new best eval loss, so the best one exists
        even when it falls between the periodic checkpoints."""

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            loss = (metrics or {}).get("eval_loss")
            if loss is not None and (
                state.best_metric is None or loss < state.best_metric
            ):
                control.should_save = True

    progress = Progress()
    callbacks: list = [progress]
    early_stop = None
    save_steps = cfg.checkpoint_steps
    if evaluating:
        callbacks.append(KeepBest())
        # load_best_model_at_end wants save steps that are a multiple of eval steps
        save_steps = cfg.eval_steps * max(
            1, round(cfg.checkpoint_steps / cfg.eval_steps)
        )
        if cfg.early_stopping_patience:
            early_stop = EarlyStoppingCallback(
                early_stopping_patience=cfg.early_stopping_patience,
                early_stopping_threshold=cfg.early_stopping_threshold,
            )
            callbacks.append(early_stop)

    with tempfile.TemporaryDirectory(prefix="lorafleet-trainer-") as scratch:
        run_dir = Path(checkpoint_dir) if checkpoint_dir else Path(scratch)
        args = TrainingArguments(
            output_dir=str(run_dir),
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_schedule,
            warmup_steps=cfg.warmup_steps,
            max_steps=total_steps,
            weight_decay=cfg.weight_decay,
            logging_steps=1,
            save_strategy="steps",
            save_steps=save_steps,
            save_total_limit=KEEP_CHECKPOINTS,
            # Resume needs optimizer, scheduler and RNG states, not just weights.
            save_only_model=False,
            eval_strategy="steps" if evaluating else "no",
            eval_steps=cfg.eval_steps if evaluating else None,
            load_best_model_at_end=evaluating,
            metric_for_best_model="eval_loss" if evaluating else None,
            greater_is_better=False if evaluating else None,
            **_checkpointing_args(TrainingArguments, cfg.gradient_checkpointing),
            report_to="none",
            seed=cfg.seed,
            data_seed=cfg.seed,
            use_cpu=device == "cpu",
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            **precision,
            **data.trainer_args,
        )
        trainer = trainer_class_for(data.task, cfg, labelled_logits)(
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval or None,
            data_collator=data.collator,
            callbacks=callbacks,
            # Packed rows carry no attention mask: the tokenizer's pad id is
            # how Trainer tells their padding from tokens when counting them
            # (a real end-of-text sharing that id goes uncounted: an
            # undercount, never an overcount).
            processing_class=tokenizer if cfg.packing else None,
        )
        trainer.remove_callback(PrinterCallback)  # progress goes to Watch, not stdout
        resume = _resume_point(trainer, run_dir, base_dir, dataset_file, cfg)
        resumed_from = checkpoints.step_of(resume) if resume else 0
        if resume:
            log.info("resuming from %s", resume)
            if on_resume is not None:
                on_resume(resumed_from)
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        if should_stop():
            raise Cancelled("training was cancelled")
        state = trainer.state
        train_seconds = time.time() - started
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        metrics = {
            # The mean of every step's loss (logged each step), which a resumed
            # run restores with the log history; Trainer's own training_loss
            # only covers the steps since the resume.
            "train_loss": float(sum(losses) / len(losses))
            if losses
            else float(output.training_loss),
            "steps": float(state.global_step),
            "train_seconds": train_seconds,
            "train_tokens": float(state.num_input_tokens_seen or 0),
        }
        # Throughput of this run's own steps (a resumed run skipped some).
        run_tokens = metrics["train_tokens"] - getattr(progress, "tokens0", 0.0)
        run_seconds = time.time() - getattr(progress, "t0", started)
        metrics["tokens_per_s"] = run_tokens / max(run_seconds, 1e-9)
        if losses:
            metrics["final_loss"] = float(losses[-1])
        if evaluating and state.best_metric is not None:
            # The best checkpoint is loaded back (load_best_model_at_end); its
            # other eval metrics (accuracy, reward accuracy) come from its log.
            best_log = next(
                (
                    h
                    for h in reversed(state.log_history)
                    if h.get("step") == state.best_global_step and "eval_loss" in h
                ),
                {},
            )
            metrics.update(_eval_metrics(best_log))
            metrics["eval_loss"] = float(state.best_metric)
            metrics["best_eval_loss"] = float(state.best_metric)
            metrics["best_step"] = float(state.best_global_step or 0)
            metrics["stopped_early"] = float(
                early_stop is not None
                and early_stop.early_stopping_patience_counter
                >= cfg.early_stopping_patience
            )
        elif data.eval:
            metrics.update(_eval_metrics(trainer.evaluate()))
        _save_adapter(trainer, model, out_dir)
    return TrainingOutcome(
        metrics=metrics,
        task=data.task,
        target_modules=targets,
        train_rows=len(data.train),
        eval_rows=len(data.eval),
        dropped_rows=data.dropped,
        total_steps=total_steps,
        extra={
            # Task facts from data prep and model setup: class_labels,
            # packing, base_quantization ("nf4" for QLoRA), base_compute_dtype.
            **data.extra,
            "resumed_from_step": resumed_from,
            "labelled_logits": labelled_logits,
            "native_dropout": native_noise,
            "torch_threads": torch.get_num_threads(),
            "mixed_precision": "bf16"
            if precision["bf16"]
            else "fp16"
            if precision["fp16"]
            else "no",
            # Read back from the model: did the Trainer switch it on?
            "gradient_checkpointing": any(
                getattr(module, "gradient_checkpointing", False) is True
                for module in model.modules()
            ),
        },
    )


_EVAL_TIMING = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def _eval_metrics(logs: dict) -> dict[str, float]:
    """Every numeric eval_* value (loss, accuracy, rewards), without timings."""
    return {
        k: float(v)
        for k, v in logs.items()
        if k.startswith("eval_")
        and k not in _EVAL_TIMING
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
    }


def _resume_point(trainer, run_dir, base_dir, dataset_file, cfg) -> Path | None:
    """The checkpoint to resume from; rank 0 tidies the folder before others look."""
    digest = checkpoints.fingerprint(base_dir, dataset_file, cfg.as_dict())
    writer = trainer.is_world_process_zero()
    resume = checkpoints.prepare(run_dir, digest, writer=True) if writer else None
    if trainer.args.world_size > 1:
        trainer.accelerator.wait_for_everyone()
        if not writer:
            resume = checkpoints.prepare(run_dir, digest, writer=False)
    return resume


def _checkpointing_args(arguments_class, enabled: bool) -> dict:
    """Gradient (activation) checkpointing under this transformers' argument names.

    Non-reentrant checkpointing needs no input grads on the frozen PEFT base.
    """
    fields = getattr(arguments_class, "__dataclass_fields__", {})
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False}}


def _save_adapter(trainer, model, out_dir: Path) -> None:
    """Writes the adapter to a temp folder beside `out_dir`, then renames it.

    Every task type saves the same way (PEFT save_pretrained, safetensors); under
    FSDP the full adapter state dict is gathered on every rank first, and only
    rank 0 writes.
    """
    state_dict = None
    if getattr(trainer, "is_fsdp_enabled", False):
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        partial = out_dir.with_name(f".{out_dir.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        kwargs = {"state_dict": state_dict} if state_dict is not None else {}
        model.save_pretrained(str(partial), safe_serialization=True, **kwargs)
        _canonical_adapter_config(partial / "adapter_config.json")
        shutil.rmtree(out_dir, ignore_errors=True)
        partial.rename(out_dir)
    if trainer.args.world_size > 1:
        trainer.accelerator.wait_for_everyone()


def _canonical_adapter_config(path: Path) -> None:
    """Sorts the set-valued lists PEFT writes in hash order.

    PEFT keeps target_modules (and friends) as a set, so their order in
    adapter_config.json changes with each process's hash seed; sorting makes
    the same training give the same bytes, hence the same registry digest.
    """
    import json

    config = json.loads(path.read_text())
    for key in ("target_modules", "modules_to_save", "exclude_modules"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
