"""Dataset rows -> tokenised training examples (the seeded train/eval split)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import datasets
from services.common.errors import InvalidArgument
from services.trainer.spec import TrainConfig


@dataclass
class PreparedData:
    task: str
    train: list[dict]
    eval: list[dict]
    dropped: int
    # Turns a list of examples into a batch; chosen per task (and packing).
    collator: Callable[[list[dict]], dict[str, Any]] | None = None
    # Extra transformers TrainingArguments the data calls for (group_by_length).
    trainer_args: dict[str, Any] = field(default_factory=dict)


def prepare_data(tokenizer, dataset_file: Path, cfg: TrainConfig) -> PreparedData:
    """Tokenises the seeded train/eval split; rows with no answer left are dropped."""
    task, rows = datasets.load_dataset(dataset_file, cfg.task_type)
    train_rows, eval_rows = datasets.split_rows(rows, cfg.eval_fraction, cfg.seed)

    def features(rows: list[datasets.Row]) -> tuple[list[dict], int]:
        out, dropped = [], 0
        for row in rows:
            f = datasets.tokenize_for_training(
                tokenizer, datasets.to_example(row, task), cfg.max_seq_length
            )
            if not any(label != -100 for label in f["labels"]):
                dropped += 1  # truncation removed every answer token
                continue
            out.append(f)
        return out, dropped

    train, dropped_train = features(train_rows)
    evaluation, dropped_eval = features(eval_rows)
    if not train:
        raise InvalidArgument(
            f"no training example keeps an answer token within max_seq_length="
            f"{cfg.max_seq_length}; raise max_seq_length or shorten the prompts"
        )
    return PreparedData(
        task,
        train,
        evaluation,
        dropped_train + dropped_eval,
        collator=causal_lm_collator(tokenizer),
    )


def causal_lm_collator(tokenizer) -> Callable[[list[dict]], dict[str, Any]]:
    """Pads each batch to its longest row (not max_length); labels pad to -100."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
