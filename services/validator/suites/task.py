"""The task suite: how well the model does the job its dataset describes,
measured on the held-out split and compared with the base model it came from.

Per task type: extraction (references that are JSON objects) by exact match
and JSON validity; free generation by ROUGE-L and BLEU; classification by
accuracy and macro-F1; preference by reward accuracy (does the model find the
chosen answer likelier than the rejected one); answer perplexity for every
task with answers, plain text by perplexity alone.

Checks are relative: each metric must be no worse than the base's same metric
(a small tolerance, partial credit below it), so a fine-tune that matches or
beats its base scores 1.0 and a worse one less. Absolute floors are opt-in
thresholds. The seed's bar, "at least 15% better than base on the task", is
reported as `improvement_over_base` and `meets_task_bar`, not checked: a base
model validated against itself must not fail for not improving on itself.
A classifier's base has no trained head, so the reference there is always
answering the majority class, which its accuracy must beat.

Thresholds (`ctx.threshold` names; defaults in DEFAULTS, floors off unless
given): max_perplexity_ratio (1.5), task_tolerance (0.05), task_bar (0.15),
min_<metric> for exact_match, json_validity, json_field_match, rouge_l, bleu,
accuracy, macro_f1, reward_accuracy; max_perplexity; min_improvement_over_base.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from services.common import datasets
from services.common.generation import generate_batch
from services.validator import task_metrics as tm
from services.validator.evaluation import perplexity
from services.validator.likelihood import answer_logprobs, predicted_labels
from services.validator.suites.base import (
    Check,
    Subject,
    Suite,
    SuiteContext,
    SuiteResult,
    at_least,
    at_most,
    fold,
)

# Token budget of one scored sequence (prompt and answer).
MAX_LENGTH = 1024
SAMPLES = 3
DEFAULTS = {
    "max_perplexity_ratio": 1.5,  # candidate / base answer perplexity
    "task_tolerance": 0.05,  # relative shortfall from the base still passing
    "task_bar": 0.15,  # improvement over base that meets the seed's bar
}
# Metrics where higher is better, in report order; each has a min_<name> floor.
HIGHER = (
    "exact_match",
    "json_validity",
    "json_field_match",
    "rouge_l",
    "bleu",
    "accuracy",
    "macro_f1",
    "reward_accuracy",
)
# The checks that say most about the task weigh double: the primary metric,
# and for an extraction, whether its answers parse at all.
MAIN_WEIGHT = 2.0
ADVICE = {
    "exact_match": "train longer or on more examples, and check the training "
    "answers are formatted exactly like the held-out ones",
    "json_validity": "keep the training answers pure JSON (no prose or code "
    "fences around it), and raise max_new_tokens if answers are cut off",
    "json_field_match": "add examples covering the fields it gets wrong, or "
    "train longer",
    "rouge_l": "train longer, or check the dataset's answers are consistent in "
    "content and style",
    "bleu": "train longer, or check the dataset's answers are consistent in wording",
    "reward_accuracy": "train more steps, and check the dataset's chosen and "
    "rejected answers are not swapped",
    "accuracy": "train more epochs or with a higher learning rate, and "
    "balance the labels (add rows of the rare ones)",
    "macro_f1": "the rare labels are missed: add rows of them or weight them",
}


@dataclass
class TaskMeasurement:
    """One subject's task metrics and a few (prompt, output, reference) rows."""

    metrics: dict[str, float]
    samples: list[tuple[str, str, str]] = field(default_factory=list)


def _generation_rows(examples: list) -> list:
    """Rows judged by what the model writes: those with a reference answer,
    except preference rows (judged by likelihood, chosen against rejected)."""
    return [e for e in examples if e.completion is not None and e.rejected is None]


def primary_metric(task: str, examples: list) -> str:
    """The metric that says whether the model does the task: exact_match for
    extraction, rouge_l for generation, accuracy for classification,
    reward_accuracy for preference, perplexity for plain text."""
    if task == "classification":
        return "accuracy"
    if task == "preference" or any(e.rejected is not None for e in examples):
        return "reward_accuracy"
    refs = [e.completion for e in _generation_rows(examples)]
    if not refs:
        return "perplexity"
    return "exact_match" if tm.is_extraction(refs) else "rouge_l"


def _user_turn(example) -> str:
    if example.prompt is not None:
        return example.prompt
    users = [m["content"] for m in example.messages if m["role"] == "user"]
    return users[-1] if users else (example.text or "")


def measure_causal(
    subject: Subject, examples: list, max_new_tokens: int
) -> TaskMeasurement:
    """Answer perplexity, greedy answers scored against the references, and
    reward accuracy on preference rows. `exact_match` is -1 when no row has
    a reference to generate against (the legacy "no references")."""
    model, tok = subject.model, subject.tokenizer
    metrics: dict[str, float] = {}
    samples: list[tuple[str, str, str]] = []
    ppl = perplexity(model, tok, examples, MAX_LENGTH) if examples else math.nan
    if math.isfinite(ppl):
        metrics["perplexity"] = ppl
    preference = [e for e in examples if e.rejected is not None]
    if preference:
        rejected = [datasets.rejected_example(e) for e in preference]
        chosen_lp = answer_logprobs(model, tok, preference, MAX_LENGTH)
        rejected_lp = answer_logprobs(model, tok, rejected, MAX_LENGTH)
        metrics["reward_accuracy"] = tm.reward_accuracy(chosen_lp, rejected_lp)
        samples = [  # (prompt, the answer it prefers, the chosen one)
            (_user_turn(e), e.completion if c > r else e.rejected, e.completion)
            for e, c, r in zip(preference, chosen_lp, rejected_lp, strict=True)
        ][:SAMPLES]
    rows = _generation_rows(examples)
    if not rows:
        metrics["exact_match"] = -1.0
        return TaskMeasurement(_finite(metrics), samples)
    outputs, _ = generate_batch(
        model,
        tok,
        [datasets.prompt_text(tok, e) for e in rows],
        max_new_tokens=max_new_tokens,
    )
    texts, refs = [o.text for o in outputs], [e.completion for e in rows]
    metrics["exact_match"] = tm.exact_match(texts, refs)
    if tm.is_extraction(refs):
        metrics["json_validity"] = tm.json_validity(texts, refs)
        metrics["json_field_match"] = tm.json_field_match(texts, refs)
    else:
        metrics["rouge_l"] = tm.rouge_l(texts, refs)
        metrics["bleu"] = tm.bleu(texts, refs)
    samples = [
        (_user_turn(e), text, ref)
        for e, text, ref in zip(rows, texts, refs, strict=True)
    ][:SAMPLES]
    return TaskMeasurement(_finite(metrics), samples)


def measure_classifier(subject: Subject, examples: list) -> TaskMeasurement:
    """Accuracy and macro-F1 of the predicted labels, next to what always
    answering the majority class scores (the reference a classifier's
    untrained base stands for)."""
    rows = [e for e in examples if e.label is not None and e.text is not None]
    if not rows:
        return TaskMeasurement({"exact_match": -1.0})
    gold = [e.label for e in rows]
    pred = predicted_labels(
        subject.model,
        subject.tokenizer,
        [e.text for e in rows],
        subject.labels,
        MAX_LENGTH,
    )
    labels = subject.labels or None
    counts = Counter(gold)
    order = [*subject.labels, *sorted(set(counts) - set(subject.labels))]
    # Ties go to the label with the lowest class id, so the reference is fixed.
    majority = max(order, key=lambda x: (counts[x], -order.index(x)))
    metrics = {
        "exact_match": -1.0,
        "accuracy": tm.accuracy(pred, gold),
        "macro_f1": tm.macro_f1(pred, gold, labels),
        "majority_rate": tm.majority_rate(gold),
        "majority_macro_f1": tm.macro_f1([majority] * len(gold), gold, labels),
    }
    samples = [(e.text, p, e.label) for e, p in zip(rows, pred, strict=True)]
    return TaskMeasurement(_finite(metrics), samples[:SAMPLES])


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    """Only what was measured: NaN means the rows held nothing to measure."""
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


def _vs_base(name: str, value: float, base: float, tol: float, weight: float) -> Check:
    label = tm.NAMES[name]
    return at_least(
        f"{name}_vs_base",
        value,
        base * (1.0 - tol),
        f"{label} {value:.2f} vs the base's {base:.2f} (tolerance {tol:.0%})",
        f"{label} {value:.2f} is below the base's {base:.2f}: {ADVICE[name]}",
        weight=weight,
    )


def _floors(metrics: dict[str, float], ctx: SuiteContext) -> list[Check]:
    """The absolute thresholds a request named (none by default)."""
    checks = []
    for name in HIGHER:
        key = f"min_{name}"
        if key in ctx.thresholds and metrics.get(name, -1.0) >= 0:
            value, floor = metrics[name], ctx.thresholds[key]
            checks.append(
                at_least(
                    key,
                    value,
                    floor,
                    f"{tm.NAMES[name]} {value:.2f} (at least {floor:.2f} asked)",
                    f"{tm.NAMES[name]} {value:.2f} is below the {floor:.2f} asked: "
                    f"{ADVICE[name]}",
                )
            )
    if "max_perplexity" in ctx.thresholds and "perplexity" in metrics:
        value, cap = metrics["perplexity"], ctx.thresholds["max_perplexity"]
        checks.append(
            at_most(
                "max_perplexity",
                value,
                cap,
                f"answer perplexity {value:.2f} (at most {cap:.2f} asked)",
                "answers are less likely than asked: train longer on the task",
            )
        )
    return checks


def _bar(
    metrics: dict[str, float], primary: str, base_value: float, ctx: SuiteContext
) -> list[Check]:
    """Records the improvement over the base reference on the primary metric;
    a check only when the request set min_improvement_over_base."""
    value = metrics[primary]
    gain = tm.improvement(primary, value, base_value)
    metrics["base_primary"] = base_value
    metrics["improvement_over_base"] = gain
    bar = ctx.threshold("task_bar", DEFAULTS["task_bar"])
    metrics["meets_task_bar"] = 1.0 if gain >= bar else 0.0
    if "min_improvement_over_base" not in ctx.thresholds:
        return []
    floor = ctx.thresholds["min_improvement_over_base"]
    return [
        at_least(
            "min_improvement_over_base",
            gain,
            floor,
            f"{primary} improves {gain:.0%} on the base (at least {floor:.0%} asked)",
            f"{primary} improves only {gain:.0%} on the base: train longer or on "
            "more task examples",
        )
    ]


class TaskSuite(Suite):
    name = "task"
    default_weight = 0.3

    def applies_to(self, ctx: SuiteContext) -> str:
        if not ctx.examples:
            return "no held-out examples to score the task on"
        if ctx.candidate.generates and ctx.task == "classification":
            return "a causal model has no class head to score classification with"
        if not ctx.candidate.generates and not any(e.label for e in ctx.examples):
            return "a classifier needs labelled held-out examples"
        return ""

    def run(self, ctx: SuiteContext) -> SuiteResult:
        if not ctx.candidate.generates:
            return self._run_classifier(ctx)
        cand, base = ctx.candidate, ctx.base

        def measure(subject: Subject) -> TaskMeasurement:
            return measure_causal(subject, ctx.examples, ctx.max_new_tokens)

        ours = ctx.memo(cand, "task_metrics", lambda: measure(cand))
        ctx.cache[f"{cand.label}:task_samples"] = ours.samples
        theirs = None
        if base is not None and base.generates:
            same = base.model is cand.model  # a base model validated as itself
            theirs = (
                ours if same else ctx.memo(base, "task_metrics", lambda: measure(base))
            )
        metrics = dict(ours.metrics)
        primary = primary_metric(ctx.task, ctx.examples)
        if primary in metrics:
            metrics["primary"] = metrics[primary]
        checks: list[Check] = []
        if theirs is not None:
            metrics.update({f"base_{k}": v for k, v in theirs.metrics.items()})
            checks += self._relative(metrics, theirs.metrics, primary, ctx)
            if primary in metrics and primary in theirs.metrics:
                checks += _bar(metrics, primary, theirs.metrics[primary], ctx)
        checks += _floors(metrics, ctx)
        return fold(self.name, checks, metrics)

    def _relative(
        self,
        metrics: dict[str, float],
        base: dict[str, float],
        primary: str,
        ctx: SuiteContext,
    ) -> list[Check]:
        tol = ctx.threshold("task_tolerance", DEFAULTS["task_tolerance"])
        checks = []
        if "perplexity" in metrics and "perplexity" in base:
            ratio = metrics["perplexity"] / base["perplexity"]
            metrics["perplexity_ratio"] = ratio
            limit = ctx.threshold(
                "max_perplexity_ratio", DEFAULTS["max_perplexity_ratio"]
            )
            checks.append(
                at_most(
                    "perplexity_ratio",
                    ratio,
                    limit,
                    f"answer perplexity {metrics['perplexity']:.2f} is {ratio:.2f}x "
                    f"the base's {base['perplexity']:.2f}",
                    f"answer perplexity rose {ratio - 1:.0%} over the base: lower "
                    "the learning rate or train fewer steps",
                    weight=MAIN_WEIGHT if primary == "perplexity" else 1.0,
                )
            )
        main = {primary, "json_validity"}
        for name in HIGHER:
            if metrics.get(name, -1.0) >= 0 and base.get(name, -1.0) >= 0:
                weight = MAIN_WEIGHT if name in main else 1.0
                checks.append(_vs_base(name, metrics[name], base[name], tol, weight))
        return checks

    def _run_classifier(self, ctx: SuiteContext) -> SuiteResult:
        cand = ctx.candidate
        ours = ctx.memo(
            cand, "task_metrics", lambda: measure_classifier(cand, ctx.examples)
        )
        ctx.cache[f"{cand.label}:task_samples"] = ours.samples
        metrics = dict(ours.metrics)
        checks: list[Check] = []
        if "accuracy" in metrics:
            metrics["primary"] = metrics["accuracy"]
            n = sum(1 for e in ctx.examples if e.label is not None)
            majority = metrics["majority_rate"]
            # "Beats" on a sample of n rows: at least one row more than the
            # constant answer gets right.
            need = min(1.0, majority + 1.0 / n)
            checks.append(
                at_least(
                    "accuracy_vs_majority",
                    metrics["accuracy"],
                    need,
                    f"accuracy {metrics['accuracy']:.2f} vs {majority:.2f} for "
                    f"always answering the most common label ({n} rows)",
                    f"accuracy {metrics['accuracy']:.2f} does not beat always "
                    f"answering the most common label ({majority:.2f}): "
                    f"{ADVICE['accuracy']}",
                    weight=MAIN_WEIGHT,
                )
            )
            checks.append(
                at_least(
                    "macro_f1_vs_majority",
                    metrics["macro_f1"],
                    metrics.get("majority_macro_f1", 0.0),
                    f"macro-F1 {metrics['macro_f1']:.2f} vs "
                    f"{metrics.get('majority_macro_f1', 0.0):.2f} for the majority "
                    "answer",
                    f"macro-F1 {metrics['macro_f1']:.2f} is no better than always "
                    f"answering the most common label: {ADVICE['macro_f1']}",
                )
            )
            checks += _bar(metrics, "accuracy", majority, ctx)
        checks += _floors(metrics, ctx)
        return fold(self.name, checks, metrics)
