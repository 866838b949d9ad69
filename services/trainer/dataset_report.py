"""What training would see of a dataset: schema, duplicates, truncation, split.

Classification adds the label distribution; preference rows count both answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from services.common import datasets
from services.common.errors import InvalidArgument
from services.trainer.data import check_task_options, keeps_answer, sequences
from services.trainer.spec import TrainConfig

MAX_ISSUES = 50
MAX_SUMMARY_ISSUES = 5
# Rows a dataset needs when eval_fraction > 0: one to train, one to evaluate.
MIN_ROWS_WITH_EVAL = 2
# Above this largest/smallest class ratio the report warns (not fatal).
IMBALANCE_WARNING = 10.0


@dataclass(frozen=True)
class Issue:
    line: int  # 1-based; 0 for the whole file
    kind: str  # schema, empty, duplicate, too_long, no_answer, label, no_assistant
    message: str
    fatal: bool = False

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class DatasetReport:
    """Counts and issues of one dataset under one tokenizer and split setting."""

    name: str
    max_seq_length: int
    eval_fraction: float
    seed: int
    task: str = ""
    row_count: int = 0
    empty_rows: int = 0
    duplicate_rows: int = 0
    over_length_rows: int = 0
    truncated_tokens: int = 0
    no_answer_rows: int = 0
    total_tokens: int = 0
    max_row_tokens: int = 0
    train_rows: int = 0
    eval_rows: int = 0
    # Classification: the label set in class-id order and rows per label.
    labels: list[str] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)
    imbalance_ratio: float = 0.0
    issues: list[Issue] = field(default_factory=list)
    fatal: list[Issue] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.fatal

    @property
    def summary(self) -> str:
        if self.fatal:
            shown = "; ".join(str(i) for i in self.fatal[:MAX_SUMMARY_ISSUES])
            more = (
                f" (and {len(self.fatal) - MAX_SUMMARY_ISSUES} more)"
                if len(self.fatal) > MAX_SUMMARY_ISSUES
                else ""
            )
            return f"dataset {self.name} is malformed: {shown}{more}"
        labels = ""
        if self.label_counts:
            counts = ", ".join(f"{k} {v}" for k, v in self.label_counts.items())
            labels = f"; labels {counts} (imbalance {self.imbalance_ratio:.1f})"
        return (
            f"dataset {self.name}: {self.row_count} {self.task} rows, split "
            f"{self.train_rows} train / {self.eval_rows} eval (seed {self.seed}); "
            f"{self.duplicate_rows} duplicate, {self.empty_rows} empty, "
            f"{self.over_length_rows} over max_seq_length={self.max_seq_length} "
            f"({self.truncated_tokens} tokens truncated), "
            f"{self.no_answer_rows} without an answer token after truncation"
            f"{labels}"
        )

    def add(self, issue: Issue) -> None:
        if issue.fatal:
            self.fatal.append(issue)
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(issue)

    def require_passed(self) -> None:
        """Start refuses a failing dataset with the summary as the message."""
        if not self.passed:
            raise InvalidArgument(self.summary, field="dataset_id")


def report_for(path: Path, tokenizer, cfg: TrainConfig) -> DatasetReport:
    """The report for a training config (what Start checks).

    Raises InvalidArgument when a config option does not fit the detected task
    (packing a classification dataset, ...): a config error, not a data issue.
    """
    report = build_report(
        path,
        tokenizer,
        task_type=cfg.task_type,
        max_seq_length=cfg.max_seq_length,
        eval_fraction=cfg.eval_fraction,
        seed=cfg.seed,
        labels=cfg.labels,
    )
    if report.passed:
        check_task_options(report.task, cfg)
    return report


def build_report(
    path: Path,
    tokenizer,
    *,
    task_type: str = "auto",
    max_seq_length: int = 512,
    eval_fraction: float = 0.1,
    seed: int = 42,
    labels: list[str] | None = None,
) -> DatasetReport:
    """Checks everything Start can know about a dataset before any training step.

    `labels` is the declared classification label set (empty: found in data).
    """
    report = DatasetReport(path.name, max_seq_length, eval_fraction, seed)
    rows, errors, blank = datasets.scan_jsonl(path)
    report.row_count = len(rows)
    for number, message in errors:
        report.add(Issue(number, "schema", message, fatal=True))
    for number in blank:
        report.empty_rows += 1
        report.add(Issue(number, "empty", "blank line (skipped)"))
    if not rows:
        if not errors:
            report.add(Issue(0, "empty", datasets.empty_dataset_message(path), True))
        return _sorted(report)
    try:
        task = datasets.detect_task(rows) if task_type in ("", "auto") else task_type
    except InvalidArgument as exc:
        report.add(Issue(0, "schema", exc.message, fatal=True))
        return _sorted(report)
    report.task = task
    if labels and task != "classification":
        report.add(
            Issue(
                0,
                "label",
                f"labels {list(labels)} are declared but this is a {task} dataset; "
                "labels apply to classification rows {'text', 'label'}",
                fatal=True,
            )
        )
    seen: dict[str, int] = {}
    valid: list[datasets.Row] = []
    for row in rows:
        if not any(v not in ("", None, [], {}) for v in row.data.values()):
            report.empty_rows += 1
        problems = datasets.row_issues(row, task, labels)
        for kind, problem in problems:
            report.add(Issue(row.number, kind, problem, fatal=True))
        key = json.dumps(row.data, sort_keys=True, ensure_ascii=False)
        if key in seen:
            report.duplicate_rows += 1
            report.add(Issue(row.number, "duplicate", f"duplicate of line {seen[key]}"))
        else:
            seen[key] = row.number
        if not problems:
            valid.append(row)
    if task == "classification" and valid:
        # Shown even when some rows are fatal: the distribution of the rest
        # helps decide how to fix the data.
        _label_distribution(report, valid, labels or [])
    if report.fatal:
        return _sorted(report)
    no_answer = _count_tokens(report, tokenizer, valid, task)
    try:
        train, held_out = datasets.split_for_task(valid, task, eval_fraction, seed)
    except InvalidArgument as exc:
        report.add(Issue(0, "schema", exc.message, fatal=True))
        return _sorted(report)
    report.train_rows, report.eval_rows = len(train), len(held_out)
    if eval_fraction > 0 and len(valid) < MIN_ROWS_WITH_EVAL:
        report.add(_too_few_to_hold_out(path, len(valid), eval_fraction))
        return _sorted(report)
    if all(row.number in no_answer for row in train):
        report.add(
            Issue(
                0,
                "no_answer",
                "no training row keeps an answer token within max_seq_length="
                f"{max_seq_length}; raise max_seq_length or shorten the prompts",
                fatal=True,
            )
        )
    return _sorted(report)


def _too_few_to_hold_out(path: Path, rows: int, eval_fraction: float) -> Issue:
    """Asking for an evaluation split of a 1-row dataset is an error.

    The empty-file message promises 2 rows (1 with eval_fraction 0): one to
    train on and one to evaluate. Training silently without the evaluation
    the config asked for would report no eval_loss and stop nothing early.
    """
    return Issue(
        0,
        "empty",
        f"dataset {path.name} has {rows} usable row: too few to hold out "
        f"eval_fraction={eval_fraction:g} for evaluation; add rows (at least "
        f"{MIN_ROWS_WITH_EVAL}: one to train, one to evaluate) or set "
        "eval_fraction to 0 to train on it without evaluation",
        fatal=True,
    )


def _label_distribution(
    report: DatasetReport, rows: list[datasets.Row], declared: list[str]
) -> None:
    """Rows per label, the imbalance ratio, and labels no row teaches."""
    report.labels = datasets.label_set(rows, declared)
    counts = {name: 0 for name in report.labels}
    for row in rows:
        counts[datasets.label_of(row.data["label"])] += 1
    report.label_counts = counts
    present = {k: v for k, v in counts.items() if v}
    if len(present) < 2:
        only = ", ".join(repr(k) for k in present) or "none"
        report.add(
            Issue(
                0,
                "label",
                f"classification needs rows of at least 2 labels; found only {only}",
                fatal=True,
            )
        )
        return
    for name in report.labels:
        if not counts[name]:
            report.add(
                Issue(
                    0,
                    "label",
                    f"declared label {name!r} has no rows; the classifier will "
                    "never learn to predict it",
                )
            )
    most = max(present, key=lambda k: present[k])
    least = min(present, key=lambda k: present[k])
    report.imbalance_ratio = present[most] / present[least]
    if report.imbalance_ratio > IMBALANCE_WARNING:
        report.add(
            Issue(
                0,
                "label",
                f"labels are imbalanced: {most!r} has {present[most]} rows, "
                f"{least!r} only {present[least]} (ratio "
                f"{report.imbalance_ratio:.1f}); add rows of the rare labels or "
                "expect the classifier to favour the common ones",
            )
        )


def _count_tokens(report: DatasetReport, tokenizer, rows, task: str) -> set[int]:
    """Adds token counts to the report; returns lines that keep no answer token.

    A preference row counts both answers (prompt + chosen, prompt + rejected).
    """
    limit = report.max_seq_length
    no_answer: set[int] = set()
    for row in rows:
        seqs = sequences(tokenizer, datasets.to_example(row, task), task)
        lengths = [len(s["input_ids"]) for s in seqs]
        report.total_tokens += sum(lengths)
        report.max_row_tokens = max(report.max_row_tokens, *lengths)
        dropped = sum(max(0, n - limit) for n in lengths)
        if dropped:
            report.over_length_rows += 1
            report.truncated_tokens += dropped
            shown = " and ".join(str(n) for n in lengths)
            report.add(
                Issue(
                    row.number,
                    "too_long",
                    f"{shown} tokens; truncation to {limit} drops {dropped}",
                )
            )
        if not all(keeps_answer(s, limit) for s in seqs):
            report.no_answer_rows += 1
            no_answer.add(row.number)
            report.add(
                Issue(
                    row.number,
                    "no_answer",
                    f"no answer token left within max_seq_length={limit}; "
                    "training skips this row",
                )
            )
    return no_answer


def _sorted(report: DatasetReport) -> DatasetReport:
    report.issues.sort(key=lambda i: i.line)
    report.fatal.sort(key=lambda i: i.line)
    return report
