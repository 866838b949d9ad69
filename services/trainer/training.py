"""The training loop: prepared data + PEFT model -> transformers Trainer -> adapter.

Data preparation lives in `data.py`, model construction in `model_setup.py`.

Uses transformers' Trainer (well-kept, handles schedules, accumulation, mixed
precision) with a callback that reports progress and honours cancellation.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import Cancelled
from services.common.modeling import load_tokenizer
from services.trainer.data import prepare_data
from services.trainer.model_setup import build_peft_model
from services.trainer.objectives import trainer_class_for
from services.trainer.spec import TrainConfig

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]


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


def fine_tune(
    base_dir: Path,
    dataset_file: Path,
    out_dir: Path,
    cfg: TrainConfig,
    *,
    device: str,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
) -> TrainingOutcome:
    """Trains a LoRA adapter and saves it (safetensors + PEFT config) to `out_dir`."""
    from transformers import (
        PrinterCallback,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    # Seeds python, numpy and torch before LoRA init: the same seed, data and
    # config give a byte-identical adapter on CPU (Trainer reseeds for dropout
    # and, via data_seed, the dataloader order).
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(base_dir)
    data = prepare_data(tokenizer, dataset_file, cfg)
    model, targets = build_peft_model(base_dir, cfg, device, data)

    steps_per_epoch = math.ceil(
        len(data.train) / (cfg.batch_size * cfg.gradient_accumulation_steps)
    )
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    started = time.time()

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            elapsed = time.time() - started
            metrics = {
                k: float(v)
                for k, v in logs.items()
                if isinstance(v, (int, float)) and k != "epoch"
            }
            metrics["epoch"] = float(state.epoch or 0.0)
            metrics["elapsed_s"] = elapsed
            tokens = float(getattr(state, "num_input_tokens_seen", 0) or 0)
            if tokens:
                metrics["tokens_per_s"] = tokens / max(elapsed, 1e-9)
            if state.global_step:
                metrics["eta_s"] = (
                    elapsed / state.global_step * (total_steps - state.global_step)
                )
            on_progress(state.global_step, total_steps, metrics)

        def on_step_end(self, args, state, control, **kw):
            if should_stop():
                control.should_training_stop = True

    with tempfile.TemporaryDirectory(prefix="lorafleet-trainer-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size,
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            learning_rate=cfg.learning_rate,
            lr_scheduler_type=cfg.lr_schedule,
            warmup_steps=cfg.warmup_steps,
            max_steps=total_steps,
            weight_decay=cfg.weight_decay,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="steps" if cfg.eval_steps and data.eval else "no",
            eval_steps=cfg.eval_steps or None,
            report_to="none",
            seed=cfg.seed,
            data_seed=cfg.seed,
            use_cpu=device == "cpu",
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_num_workers=0,
            include_num_input_tokens_seen="non_padding",
            **data.trainer_args,
        )
        trainer = trainer_class_for(data.task, cfg)(
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval or None,
            data_collator=data.collator,
            callbacks=[Progress()],
        )
        trainer.remove_callback(PrinterCallback)  # progress goes to Watch, not stdout
        output = trainer.train()
        if should_stop():
            raise Cancelled("training was cancelled")
        train_seconds = time.time() - started
        metrics = {
            "train_loss": float(output.training_loss),
            "steps": float(trainer.state.global_step),
            "train_seconds": train_seconds,
            "train_tokens": float(trainer.state.num_input_tokens_seen or 0),
        }
        metrics["tokens_per_s"] = metrics["train_tokens"] / max(train_seconds, 1e-9)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        if losses:
            metrics["final_loss"] = float(losses[-1])
        if data.eval:
            metrics["eval_loss"] = float(trainer.evaluate()["eval_loss"])
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return TrainingOutcome(
        metrics=metrics,
        task=data.task,
        target_modules=targets,
        train_rows=len(data.train),
        eval_rows=len(data.eval),
        dropped_rows=data.dropped,
        total_steps=total_steps,
    )
