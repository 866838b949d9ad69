"""JSONL datasets: parsing with row numbers, task detection, seeded splits and
rendering rows into prompt/completion text with the tokenizer's chat template.

Shared by the trainer (which learns the completions) and the validator (which
scores them on the same held-out split), so both see identical examples.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument

TASKS = ("text", "instruction", "chat")
MAX_REPORTED_ERRORS = 10
FALLBACK_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass(frozen=True)
class Row:
    number: int  # 1-based line number in the file, for error messages
    data: dict[str, Any]


@dataclass(frozen=True)
class Example:
    """One row as chat turns; `completion` is the last assistant answer, if any."""

    messages: list[dict[str, str]]
    completion: str | None
    text: str | None = None


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
        f"dataset {path.name} is empty: it needs at least 2 JSON rows "
        'such as {"instruction": ..., "output": ...}'
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
    first = rows[0].data
    if "messages" in first:
        return "chat"
    if "instruction" in first or "output" in first:
        return "instruction"
    if "text" in first:
        return "text"
    raise InvalidArgument(
        f"line {rows[0].number}: cannot tell the task from keys {sorted(first)}; "
        "rows need "
        "'text', or 'instruction'/'input'/'output', or 'messages'"
    )


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def row_problems(row: Row, task: str) -> list[str]:
    """Schema problems of one row for `task`, without the line prefix."""
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
        problems.extend(_chat_problems(row))
    return problems


def validate_rows(rows: list[Row], task: str, path: Path) -> None:
    """Checks every row against the task's schema; raises listing bad rows."""
    errors: list[str] = []
    for row in rows:
        errors.extend(f"line {row.number}: {p}" for p in row_problems(row, task))
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if errors:
        raise InvalidArgument(_summarise(path, errors))


def _chat_problems(row: Row) -> list[str]:
    msgs = row.data.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return ["'messages' must be a non-empty list"]
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in (
            "system",
            "user",
            "assistant",
        ):
            return [f"messages[{i}] needs role system, user or assistant"]
        if not isinstance(m.get("content"), str):
            return [f"messages[{i}].content must be a string"]
    if not any(m["role"] == "assistant" for m in msgs):
        return ["no assistant message to learn from"]
    return []


def _summarise(path: Path, errors: list[str]) -> str:
    shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
    more = " (and more)" if len(errors) > MAX_REPORTED_ERRORS else ""
    return f"dataset {path.name} is malformed: {shown}{more}"


def load_dataset(path: Path, task: str = "auto") -> tuple[str, list[Row]]:
    """Reads, detects the task (unless given) and validates a dataset file."""
    rows = read_jsonl(path)
    task = detect_task(rows) if task in ("", "auto") else task
    if task not in TASKS:
        raise InvalidArgument(f"unknown task type {task!r}; valid: {', '.join(TASKS)}")
    validate_rows(rows, task, path)
    return task, rows


def split_rows(
    rows: list[Row], eval_fraction: float, seed: int
) -> tuple[list[Row], list[Row]]:
    """Seeded shuffle, then the first `eval_fraction` become the held-out split."""
    if not 0.0 <= eval_fraction <= 0.5:
        raise InvalidArgument(
            f"eval_fraction must be in [0, 0.5], got {eval_fraction}",
            field="eval_fraction",
        )
    order = list(rows)
    random.Random(seed).shuffle(order)
    n_eval = round(len(order) * eval_fraction)
    if eval_fraction > 0 and len(order) >= 2:
        n_eval = max(1, n_eval)
    if len(order) - n_eval < 1:
        raise InvalidArgument(
            f"dataset has {len(rows)} rows: too few to hold out "
            f"{eval_fraction:.0%} for evaluation and still train"
        )
    return order[n_eval:], order[:n_eval]


def to_example(row: Row, task: str) -> Example:
    d = row.data
    if task == "text":
        return Example(messages=[], completion=None, text=d["text"])
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


# --- rendering -----------------------------------------------------------------
def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The text a model sees before it answers the last user turn."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
    joined = "\n\n".join(m["content"] for m in messages)
    return FALLBACK_PROMPT.format(instruction=joined)


def prompt_messages(example: Example) -> list[dict[str, str]]:
    """The turns before the final assistant answer."""
    return example.messages[:-1] if example.completion is not None else example.messages


def tokenize_for_training(
    tokenizer, example: Example, max_length: int
) -> dict[str, list[int]]:
    """input_ids and labels; prompt tokens are masked (-100) so loss is on answers."""
    eos = tokenizer.eos_token or ""
    if example.text is not None:
        ids = tokenizer(example.text + eos, add_special_tokens=False)["input_ids"][
            :max_length
        ]
        return {"input_ids": ids, "labels": list(ids)}
    ids: list[int] = []
    labels: list[int] = []
    if has_chat_template(tokenizer):
        # Render turn by turn so each assistant answer (and its end marker) is
        # learned while user/system turns and template scaffolding are masked.
        rendered = ""
        for i, msg in enumerate(example.messages):
            if msg["role"] == "assistant":
                prefix = tokenizer.apply_chat_template(
                    example.messages[:i], tokenize=False, add_generation_prompt=True
                )
                full = tokenizer.apply_chat_template(
                    example.messages[: i + 1], tokenize=False
                )
                if not (full.startswith(prefix) and prefix.startswith(rendered)):
                    raise InvalidArgument(
                        "the tokenizer's chat template does not render turns "
                        "incrementally, so answer tokens cannot be isolated; use a "
                        "template whose prefixes are stable"
                    )
                _append(tokenizer, ids, labels, prefix[len(rendered) :], learn=False)
                _append(tokenizer, ids, labels, full[len(prefix) :], learn=True)
                rendered = full
    else:
        prompt = render_prompt(tokenizer, prompt_messages(example))
        _append(tokenizer, ids, labels, prompt, learn=False)
        _append(tokenizer, ids, labels, (example.completion or "") + eos, learn=True)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def _append(
    tokenizer, ids: list[int], labels: list[int], text: str, learn: bool
) -> None:
    if not text:
        return
    piece = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids.extend(piece)
    labels.extend(piece if learn else [-100] * len(piece))


def dataset_file_of(artifact: Any) -> Path:
    """The single JSONL file of a dataset artifact."""
    files = [f.path for f in artifact.files if f.path.endswith(".jsonl")]
    if len(files) != 1:
        raise FailedPrecondition(
            f"dataset {artifact.id} must hold exactly one .jsonl file, "
            f"found {len(files)}"
        )
    return Path(artifact.local_path) / files[0]
