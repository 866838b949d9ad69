"""Dataset rows -> tokenised training examples (the seeded train/eval split).

Each task type turns a row into features its objective trains on:

- text, instruction, chat, completion: `input_ids` + `labels` (-100 masks what
  is not learned), a causal-LM loss; these can be packed (see `packing.py`).
- classification: `input_ids` + an integer class id in `labels`.
- preference: the chosen and the rejected answer to one prompt, each as
  `input_ids` + `labels` with the prompt masked (DPO, see `objectives.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import datasets
from services.common.errors import InvalidArgument
from services.trainer.packing import PackedCollator, pack
from services.trainer.spec import TrainConfig

PACKABLE = datasets.CAUSAL_TASKS


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
    # Classification: class names in class-id order.
    labels: list[str] = field(default_factory=list)
    # The tokenizer's padding id (a classification head needs it).
    pad_token_id: int | None = None
    # Facts for the adapter's metadata, added by data preparation and model
    # setup: "class_labels", "packing", "base_quantization".
    extra: dict[str, Any] = field(default_factory=dict)


def check_task_options(task: str, cfg: TrainConfig) -> None:
    """Refuses config options that do not apply to `task`, naming the fix."""
    if cfg.packing and task not in PACKABLE:
        raise InvalidArgument(
            f"config.packing applies to causal-LM tasks ({', '.join(PACKABLE)}); "
            f"a {task} dataset trains on whole rows, so turn packing off"
            + (" (group_by_length cuts padding)" if task == "classification" else ""),
            field="config.packing",
        )
    if cfg.group_by_length and task == "preference":
        raise InvalidArgument(
            "config.group_by_length does not apply to preference data (each "
            "example is a pair of answers); turn it off",
            field="config.group_by_length",
        )
    if cfg.labels and task != "classification":
        raise InvalidArgument(
            f"config.labels declares classification labels but this is a {task} "
            "dataset; leave labels empty or use rows of {'text', 'label'}",
            field="config.labels",
        )


def class_labels(rows: list[datasets.Row], declared: list[str]) -> list[str]:
    """The label set in class-id order; at least two classes must have rows."""
    labels = datasets.label_set(rows, declared)
    found = {datasets.label_of(r.data.get("label")) for r in rows}
    if len(found) < 2:
        only = ", ".join(repr(x) for x in sorted(found - {None})) or "none"
        raise InvalidArgument(
            f"classification needs rows of at least 2 labels; found only {only}",
            field="dataset_id",
        )
    return labels


def sequences(tokenizer, example: datasets.Example, task: str) -> list[dict]:
    """The untruncated token sequences of one example, with their labels.

    One sequence per row, two for preference (chosen, rejected). Classification
    sequences carry no per-token labels: the class is the target.
    """
    if task == "classification":
        return [{"input_ids": tokenizer(example.text)["input_ids"]}]
    untruncated = 10**9
    first = datasets.tokenize_for_training(tokenizer, example, untruncated)
    if task != "preference":
        return [first]
    rejected = datasets.rejected_example(example)
    return [first, datasets.tokenize_for_training(tokenizer, rejected, untruncated)]


def keeps_answer(sequence: dict, max_length: int) -> bool:
    """True when truncation to `max_length` leaves a token to learn."""
    if "labels" not in sequence:
        return True
    return any(label != -100 for label in sequence["labels"][:max_length])


def prepare_data(tokenizer, dataset_file: Path, cfg: TrainConfig) -> PreparedData:
    """Tokenises the seeded train/eval split; rows with no answer left are dropped."""
    task, rows = datasets.load_dataset(dataset_file, cfg.task_type, cfg.labels)
    check_task_options(task, cfg)
    labels = class_labels(rows, cfg.labels) if task == "classification" else []
    label_ids = {name: i for i, name in enumerate(labels)}
    train_rows, eval_rows = datasets.split_for_task(
        rows, task, cfg.eval_fraction, cfg.seed
    )
    limit = cfg.max_seq_length

    def features(rows: list[datasets.Row]) -> tuple[list[dict], int]:
        out, dropped = [], 0
        for row in rows:
            example = datasets.to_example(row, task)
            seqs = sequences(tokenizer, example, task)
            if not all(keeps_answer(s, limit) for s in seqs):
                dropped += 1  # truncation removed every answer token
                continue
            cut = [{k: v[:limit] for k, v in s.items()} for s in seqs]
            if task == "classification":
                out.append({**cut[0], "labels": label_ids[example.label]})
            elif task == "preference":
                out.append(
                    {
                        f"{side}_{k}": v
                        for side, s in zip(SIDES, cut, strict=True)
                        for k, v in s.items()
                    }
                )
            else:
                out.append(cut[0])
        return out, dropped

    train, dropped_train = features(train_rows)
    evaluation, dropped_eval = features(eval_rows)
    if not train:
        raise InvalidArgument(
            f"no training example keeps an answer token within max_seq_length="
            f"{cfg.max_seq_length}; raise max_seq_length or shorten the prompts"
        )
    data = PreparedData(
        task,
        train,
        evaluation,
        dropped_train + dropped_eval,
        collator=collator_for(task, tokenizer, cfg),
        labels=labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    if labels:
        data.extra["class_labels"] = labels
    if cfg.packing:
        apply_packing(data, limit)
    if cfg.group_by_length:
        group_by_length(data)
    return data


def apply_packing(data: PreparedData, limit: int) -> None:
    """Packs prepared causal-LM examples into rows of up to `limit` tokens."""
    examples = len(data.train)
    data.train, data.eval = pack(data.train, limit), pack(data.eval, limit)
    data.collator = PackedCollator(data.pad_token_id)
    data.extra["packing"] = {"train_examples": examples, "train_rows": len(data.train)}


def group_by_length(data: PreparedData) -> None:
    # transformers 5 names it train_sampling_strategy; lengths come from each
    # example's input_ids.
    data.trainer_args["train_sampling_strategy"] = "group_by_length"


SIDES = ("chosen", "rejected")


def collator_for(task: str, tokenizer, cfg: TrainConfig) -> Callable:
    if task == "classification":
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer, padding=True)
    if task == "preference":
        return PreferenceCollator(tokenizer.pad_token_id)
    if cfg.packing:
        return PackedCollator(tokenizer.pad_token_id)
    return causal_lm_collator(tokenizer)


def causal_lm_collator(tokenizer) -> Callable[[list[dict]], dict[str, Any]]:
    """Pads each batch to its longest row (not max_length); labels pad to -100."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)


@dataclass
class PreferenceCollator:
    """Pairs -> one batch: the B chosen rows, then the B rejected rows.

    One padded batch of 2B rows lets the policy and the reference score both
    answers in a single forward pass each; `input_ids`/`labels` keep the names
    transformers' Trainer counts tokens and finds labels by.
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, Any]:
        import torch

        rows = [
            (f[f"{s}_input_ids"], f[f"{s}_labels"]) for s in SIDES for f in features
        ]
        width = max(len(ids) for ids, _ in rows)
        pad = self.pad_token_id
        return {
            "input_ids": torch.tensor([i + [pad] * (width - len(i)) for i, _ in rows]),
            "attention_mask": torch.tensor(
                [[1] * len(i) + [0] * (width - len(i)) for i, _ in rows]
            ),
            "labels": torch.tensor([y + [-100] * (width - len(y)) for _, y in rows]),
        }
