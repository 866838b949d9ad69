"""JSONL datasets: parsing with row numbers, task detection, schema checks per
task, seeded (stratified) splits and rows as examples; `prompts` renders them.

Shared by the trainer (which learns the completions) and the validator (which
scores them on the same held-out split), so both see identical examples.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.chat_rows import chat_issues
from services.common.errors import FailedPrecondition, InvalidArgument, shorten
from services.common.prompts import (  # noqa: F401  (re-exported for callers)
    FALLBACK_PROMPT,
    Example,
    has_chat_template,
    prompt_messages,
    prompt_text,
    rejected_example,
    render_prompt,
    tokenize_for_training,
)

TASKS = ("text", "instruction", "chat", "completion", "classification", "preference")
# Tasks whose rows become one token sequence with a causal-LM loss (packable).
CAUSAL_TASKS = ("text", "instruction", "chat", "completion")
MAX_REPORTED_ERRORS = 10


@dataclass(frozen=True)
class Row:
    number: int  # 1-based line number in the file, for error messages
    data: dict[str, Any]


def scan_jsonl(path: Path) -> tuple[list[Row], list[tuple[int, str]], list[int]]:
    """Parses without raising: rows, (line, problem) pairs, and blank line numbers.

    The dataset report needs every problem at once; read_jsonl stops at them.
    """
    rows: list[Row] = []
    errors: list[tuple[int, str]] = []
    blank: list[int] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"dataset {path.name} is not UTF-8 text: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            blank.append(number)
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append((number, f"invalid JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(data, dict):
            errors.append(
                (number, f"expected a JSON object, got {type(data).__name__}")
            )
            continue
        rows.append(Row(number, data))
    return rows, errors, blank


def empty_dataset_message(path: Path) -> str:
    return (
        f"dataset {path.name} is empty: it needs at least 2 JSON rows (1 when "
        'eval_fraction is 0) such as {"instruction": ..., "output": ...}'
    )


def read_jsonl(path: Path) -> list[Row]:
    """Parses a JSONL file; malformed lines are reported with their numbers."""
    rows, errors, _ = scan_jsonl(path)
    if errors:
        raise InvalidArgument(
            _summarise(path, [f"line {n}: {msg}" for n, msg in errors])
        )
    if not rows:
        raise InvalidArgument(empty_dataset_message(path))
    return rows


def detect_task(rows: list[Row]) -> str:
    """The task of a dataset, from the keys of its first row.

    The registry's `content.task_of_keys` records the same for dataset versions.
    """
    first = rows[0].data
    if "messages" in first:
        return "chat"
    if {"chosen", "rejected"} & first.keys():
        return "preference"
    if "completion" in first:
        return "completion"
    if "instruction" in first or "output" in first:
        return "instruction"
    if "label" in first and "text" in first:
        return "classification"
    if "text" in first:
        return "text"
    raise InvalidArgument(
        f"line {rows[0].number}: cannot tell the task from keys {sorted(first)}; "
        "rows need 'text', 'instruction'/'input'/'output', 'messages', "
        "'prompt'/'completion', 'text'/'label' or 'prompt'/'chosen'/'rejected'"
    )


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def label_of(value: Any) -> str | None:
    """A classification label as text: strings and integers; None if unusable."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def row_issues(
    row: Row, task: str, labels: list[str] | None = None
) -> list[tuple[str, str]]:
    """(kind, problem) pairs of one row for `task`, without the line prefix.

    kind is "schema", "no_assistant" (chat) or "label" (classification label
    outside the declared `labels`); every one makes the dataset unusable.
    """
    d = row.data
    problems: list[str] = []
    if task == "text":
        if not _nonempty_str(d.get("text")):
            problems.append("'text' must be a non-empty string")
    elif task == "instruction":
        if not _nonempty_str(d.get("instruction")):
            problems.append("'instruction' must be a non-empty string")
        if not _nonempty_str(d.get("output")):
            problems.append("'output' must be a non-empty string")
        if "input" in d and not isinstance(d["input"], str):
            problems.append("'input' must be a string")
    elif task == "chat":
        return chat_issues(d.get("messages"))
    elif task == "completion":
        if not isinstance(d.get("prompt"), str):
            problems.append("'prompt' must be a string")
        if not _nonempty_str(d.get("completion")):
            problems.append("'completion' must be a non-empty string")
    elif task == "classification":
        return _classification_problems(row, labels)
    elif task == "preference":
        for key in ("prompt", "chosen", "rejected"):
            if not _nonempty_str(d.get(key)):
                problems.append(f"'{key}' must be a non-empty string")
        if not problems and d["chosen"].strip() == d["rejected"].strip():
            problems.append(
                "'chosen' and 'rejected' are the same answer, so there is "
                "nothing to prefer"
            )
    return [("schema", p) for p in problems]


def row_problems(row: Row, task: str, labels: list[str] | None = None) -> list[str]:
    """Problems of one row for `task`, without the line prefix."""
    return [message for _, message in row_issues(row, task, labels)]


def _classification_problems(
    row: Row, labels: list[str] | None
) -> list[tuple[str, str]]:
    d = row.data
    out: list[tuple[str, str]] = []
    if not _nonempty_str(d.get("text")):
        out.append(("schema", "'text' must be a non-empty string"))
    label = label_of(d.get("label"))
    if label is None:
        out.append(
            (
                "schema",
                f"'label' must be a non-empty string or an integer, "
                f"got {json.dumps(d.get('label'))}",
            )
        )
    elif labels and label not in labels:
        out.append(
            (
                "label",
                f"label {label!r} is not in the declared labels "
                f"{labels}; fix the row or add it to config.labels",
            )
        )
    return out


def validate_rows(
    rows: list[Row], task: str, path: Path, labels: list[str] | None = None
) -> None:
    """Checks every row against the task's schema; raises listing bad rows."""
    errors: list[str] = []
    for row in rows:
        errors.extend(
            f"line {row.number}: {p}" for p in row_problems(row, task, labels)
        )
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if errors:
        raise InvalidArgument(_summarise(path, errors))


def label_set(rows: list[Row], declared: list[str] | None = None) -> list[str]:
    """Class names in class-id order: the declared ones, else those in the rows.

    Found labels are sorted, numerically when they are all integers (so "10"
    comes after "9").
    """
    if declared:
        return list(declared)
    found = {label_of(r.data.get("label")) for r in rows} - {None}
    if found and all(re.fullmatch(r"-?\d+", x) for x in found):
        return sorted(found, key=int)
    return sorted(found)


def _summarise(path: Path, errors: list[str]) -> str:
    shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
    more = " (and more)" if len(errors) > MAX_REPORTED_ERRORS else ""
    return f"dataset {path.name} is malformed: {shown}{more}"


def load_dataset(
    path: Path, task: str = "auto", labels: list[str] | None = None
) -> tuple[str, list[Row]]:
    """Reads, detects the task (unless given) and validates a dataset file.

    `labels` is the declared classification label set (empty: any label).
    """
    rows = read_jsonl(path)
    task = detect_task(rows) if task in ("", "auto") else task
    if task not in TASKS:
        raise InvalidArgument(
            f"unknown task type {shorten(task)!r}; valid: {', '.join(TASKS)}"
        )
    validate_rows(rows, task, path, labels)
    return task, rows


def split_rows(
    rows: list[Row],
    eval_fraction: float,
    seed: int,
    stratify: Callable[[Row], str] | None = None,
) -> tuple[list[Row], list[Row]]:
    """Seeded shuffle, then the first `eval_fraction` become the held-out split.

    With `stratify` (a row's class), each class is split on its own so the
    held-out rows keep the class proportions and no class loses all its
    training rows to evaluation.
    """
    if not 0.0 <= eval_fraction <= 0.5:
        raise InvalidArgument(
            f"eval_fraction must be in [0, 0.5], got {eval_fraction}",
            field="eval_fraction",
        )
    order = list(rows)
    rng = random.Random(seed)
    rng.shuffle(order)
    n_eval = round(len(order) * eval_fraction)
    if eval_fraction > 0 and len(order) >= 2:
        n_eval = max(1, n_eval)
    if len(order) - n_eval < 1:
        raise InvalidArgument(
            f"dataset has {len(rows)} rows: too few to hold out "
            f"{eval_fraction:.0%} for evaluation and still train"
        )
    if stratify is None:
        return order[n_eval:], order[:n_eval]
    return _stratified(order, n_eval, stratify, rng)


def _stratified(
    order: list[Row], n_eval: int, stratify: Callable[[Row], str], rng
) -> tuple[list[Row], list[Row]]:
    """Largest-remainder share of `n_eval` per class; one row per class trains."""
    groups: dict[str, list[Row]] = {}
    for row in order:
        groups.setdefault(stratify(row), []).append(row)
    total = len(order)
    exact = {k: len(g) * n_eval / total for k, g in groups.items()}
    share = {k: min(int(v), len(groups[k]) - 1) for k, v in exact.items()}
    by_remainder = sorted(groups, key=lambda k: (share[k] - exact[k], k))
    while sum(share.values()) < n_eval:
        grown = False
        for k in by_remainder:
            if sum(share.values()) < n_eval and share[k] < len(groups[k]) - 1:
                share[k] += 1
                grown = True
        if not grown:
            break
    train = [r for k, g in groups.items() for r in g[share[k] :]]
    held_out = [r for k, g in groups.items() for r in g[: share[k]]]
    rng.shuffle(train)
    rng.shuffle(held_out)
    return train, held_out


def split_for_task(
    rows: list[Row], task: str, eval_fraction: float, seed: int
) -> tuple[list[Row], list[Row]]:
    """The split the trainer uses: stratified by label for classification."""
    stratify = (
        (lambda r: label_of(r.data.get("label")) or "")
        if task == "classification"
        else None
    )
    return split_rows(rows, eval_fraction, seed, stratify)


def to_example(row: Row, task: str) -> Example:
    d = row.data
    if task == "text":
        return Example(messages=[], completion=None, text=d["text"])
    if task == "classification":
        return Example(
            messages=[], completion=None, text=d["text"], label=label_of(d["label"])
        )
    if task == "completion":
        return Example(
            messages=[
                {"role": "user", "content": d["prompt"]},
                {"role": "assistant", "content": d["completion"]},
            ],
            completion=d["completion"],
            prompt=d["prompt"],
        )
    if task == "preference":
        return Example(
            messages=[
                {"role": "user", "content": d["prompt"].strip()},
                {"role": "assistant", "content": d["chosen"].strip()},
            ],
            completion=d["chosen"].strip(),
            rejected=d["rejected"].strip(),
        )
    if task == "instruction":
        user = d["instruction"].strip()
        if d.get("input", "").strip():
            user = f"{user}\n\n{d['input'].strip()}"
        answer = d["output"].strip()
        return Example(
            messages=[
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer},
            ],
            completion=answer,
        )
    msgs = [{"role": m["role"], "content": m["content"]} for m in d["messages"]]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return Example(messages=msgs[: last + 1], completion=msgs[last]["content"])


def dataset_file_of(artifact: Any) -> Path:
    """The single JSONL file of a dataset artifact."""
    files = [f.path for f in artifact.files if f.path.endswith(".jsonl")]
    if len(files) != 1:
        raise FailedPrecondition(
            f"dataset {artifact.id} must hold exactly one .jsonl file, "
            f"found {len(files)}"
        )
    return Path(artifact.local_path) / files[0]
