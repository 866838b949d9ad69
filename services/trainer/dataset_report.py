"""What training would see of a dataset: schema, duplicates, truncation, split."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from services.common import datasets
from services.common.errors import InvalidArgument

MAX_ISSUES = 50
MAX_SUMMARY_ISSUES = 5
UNTRUNCATED = 10**9


@dataclass(frozen=True)
class Issue:
    line: int  # 1-based; 0 for the whole file
    kind: str  # schema, empty, duplicate, too_long, no_answer
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
        return (
            f"dataset {self.name}: {self.row_count} {self.task} rows, split "
            f"{self.train_rows} train / {self.eval_rows} eval (seed {self.seed}); "
            f"{self.duplicate_rows} duplicate, {self.empty_rows} empty, "
            f"{self.over_length_rows} over max_seq_length={self.max_seq_length} "
            f"({self.truncated_tokens} tokens truncated), "
            f"{self.no_answer_rows} without an answer token after truncation"
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


def build_report(
    path: Path,
    tokenizer,
    *,
    task_type: str = "auto",
    max_seq_length: int = 512,
    eval_fraction: float = 0.1,
    seed: int = 42,
) -> DatasetReport:
    """Checks everything Start can know about a dataset before any training step."""
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
    seen: dict[str, int] = {}
    valid: list[datasets.Row] = []
    for row in rows:
        if not any(v not in ("", None, [], {}) for v in row.data.values()):
            report.empty_rows += 1
        problems = datasets.row_problems(row, task)
        for problem in problems:
            report.add(Issue(row.number, "schema", problem, fatal=True))
        key = json.dumps(row.data, sort_keys=True, ensure_ascii=False)
        if key in seen:
            report.duplicate_rows += 1
            report.add(Issue(row.number, "duplicate", f"duplicate of line {seen[key]}"))
        else:
            seen[key] = row.number
        if not problems:
            valid.append(row)
    if report.fatal:
        return _sorted(report)
    no_answer = _count_tokens(report, tokenizer, valid, task)
    try:
        train, held_out = datasets.split_rows(valid, eval_fraction, seed)
    except InvalidArgument as exc:
        report.add(Issue(0, "schema", exc.message, fatal=True))
        return _sorted(report)
    report.train_rows, report.eval_rows = len(train), len(held_out)
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


def _count_tokens(report: DatasetReport, tokenizer, rows, task: str) -> set[int]:
    """Adds token counts to the report; returns lines that keep no answer token."""
    limit = report.max_seq_length
    no_answer: set[int] = set()
    for row in rows:
        features = datasets.tokenize_for_training(
            tokenizer, datasets.to_example(row, task), UNTRUNCATED
        )
        n = len(features["input_ids"])
        report.total_tokens += n
        report.max_row_tokens = max(report.max_row_tokens, n)
        if n > limit:
            report.over_length_rows += 1
            report.truncated_tokens += n - limit
            report.add(
                Issue(
                    row.number,
                    "too_long",
                    f"{n} tokens; truncation to {limit} drops {n - limit}",
                )
            )
        if not any(label != -100 for label in features["labels"][:limit]):
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
