"""The task suite on the tiny llama: against itself (full marks, no
improvement), a model fitted to the held-out answers against the untrained
one (it meets the bar; swapped, it fails with advice), generation, text and
preference rows, and a sequence classifier against the majority answer."""

from __future__ import annotations

import copy
import math

import pytest

from services.common import datasets
from services.common.modeling import (
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
)
from services.validator.evaluation import perplexity
from services.validator.likelihood import answer_logprobs
from services.validator.suites.base import Subject, SuiteContext
from services.validator.suites.task import TaskSuite, primary_metric

ORDERS = [
    ("Ana wants 2 socks.", '{"qty": 2}'),
    ("Mei wants 7 lamps.", '{"qty": 7}'),
    ("Ravi wants 3 cups.", '{"qty": 3}'),
]
PROSE = [
    ("Name a colour of the sea.", "The sea is blue."),
    ("Where do cats sleep?", "Cats sleep on the sofa."),
]
SENTIMENT = [
    ("great lovely socks", "pos"),
    ("awful broken lamp", "neg"),
    ("lovely great cups", "pos"),
    ("broken awful order", "neg"),
]


def rows(task: str, records: list[dict]) -> list[datasets.Example]:
    return [
        datasets.to_example(datasets.Row(i + 1, r), task) for i, r in enumerate(records)
    ]


def orders() -> list[datasets.Example]:
    return rows(
        "instruction",
        [
            {"instruction": "Extract the order as JSON.", "input": text, "output": ans}
            for text, ans in ORDERS
        ],
    )


def fit(model, tokenizer, examples, steps: int = 80):
    """Adam on the answer tokens until the tiny model has them by heart."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    features = [datasets.tokenize_for_training(tokenizer, e, 256) for e in examples]
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(
        features
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


@pytest.fixture
def untrained(tiny_model_dir):
    return lambda: load_causal_lm(tiny_model_dir, "cpu").eval()


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, tokenizer):
    """The tiny llama fitted to the ORDERS answers (exact match 1.0)."""
    model = load_causal_lm(tiny_model_dir, "cpu")
    return fit(model, tokenizer, orders())


def run(candidate, base, tokenizer, task, examples, **kw):
    ctx = SuiteContext(
        Subject("candidate", "c", candidate, tokenizer),
        Subject("base", "b", base, tokenizer) if base is not None else None,
        task=task,
        examples=examples,
        max_new_tokens=kw.pop("max_new_tokens", 12),
        **kw,
    )
    return TaskSuite().run(ctx), ctx


def checks_of(result) -> dict:
    return {c.name: c for c in result.checks}


def test_a_model_against_its_own_copy_scores_full_marks_without_improving(
    fitted, tokenizer
):
    result, ctx = run(fitted, copy.deepcopy(fitted), tokenizer, "instruction", orders())
    m = result.metrics
    assert result.score == 1.0 and result.passed
    for key in ("exact_match", "json_validity", "json_field_match", "perplexity"):
        assert key in m and f"base_{key}" in m
    assert "rouge_l" not in m  # JSON references: an extraction
    assert m["exact_match"] == m["base_exact_match"] == 1.0
    assert m["primary"] == m["base_primary"] == 1.0
    assert m["perplexity_ratio"] == pytest.approx(1.0)
    assert m["improvement_over_base"] == 0.0 and m["meets_task_bar"] == 0.0
    assert set(checks_of(result)) == {
        "perplexity_ratio",
        "exact_match_vs_base",
        "json_validity_vs_base",
        "json_field_match_vs_base",
    }
    samples = ctx.cache["candidate:task_samples"]
    assert samples[0] == (
        "Extract the order as JSON.\n\nAna wants 2 socks.",
        '{"qty": 2}',
        '{"qty": 2}',
    )
    assert len(samples) == 3


def test_a_fine_tune_that_learned_the_task_meets_the_bar(fitted, untrained, tokenizer):
    result, _ = run(fitted, untrained(), tokenizer, "instruction", orders())
    m = result.metrics
    assert result.score == 1.0
    assert m["exact_match"] == 1.0 and m["base_exact_match"] < 1.0
    assert m["perplexity_ratio"] < 0.5
    assert m["improvement_over_base"] > 0.15 and m["meets_task_bar"] == 1.0


def test_a_candidate_worse_than_its_base_fails_with_advice(
    fitted, untrained, tokenizer
):
    result, _ = run(untrained(), fitted, tokenizer, "instruction", orders())
    checks = checks_of(result)
    m = result.metrics
    assert m["exact_match"] == 0.0 and m["base_exact_match"] == 1.0
    assert m["improvement_over_base"] == -1.0 and m["meets_task_bar"] == 0.0
    for name in ("exact_match_vs_base", "json_validity_vs_base", "perplexity_ratio"):
        assert not checks[name].passed, checks[name].message
    assert checks["exact_match_vs_base"].recommendation.startswith(
        "exact match 0.00 is below the base's 1.00:"
    )
    assert "answer perplexity rose" in checks["perplexity_ratio"].recommendation
    assert "lower the learning rate" in checks["perplexity_ratio"].recommendation
    assert result.score < 0.5


def test_prose_answers_are_scored_by_rouge_and_bleu_with_optional_floors(
    untrained, tokenizer
):
    examples = rows("instruction", [{"instruction": q, "output": a} for q, a in PROSE])
    assert primary_metric("instruction", examples) == "rouge_l"
    model = untrained()
    result, _ = run(model, model, tokenizer, "instruction", examples)
    m = result.metrics
    assert {"rouge_l", "bleu", "base_rouge_l", "base_bleu"} <= m.keys()
    assert "json_validity" not in m
    assert m["primary"] == m["rouge_l"] and result.score == 1.0
    # No base: only the floors the request asked for apply.
    result, _ = run(
        model, None, tokenizer, "instruction", examples, thresholds={"min_rouge_l": 0.9}
    )
    (check,) = result.checks
    assert check.name == "min_rouge_l" and not check.passed
    assert "below the 0.90 asked" in check.recommendation
    assert "improvement_over_base" not in result.metrics


def test_text_rows_are_judged_by_perplexity_alone(untrained, tokenizer):
    examples = rows("text", [{"text": "Ana wants 2 socks."}, {"text": "Mei: 7."}])
    assert primary_metric("text", examples) == "perplexity"
    result, ctx = run(untrained(), untrained(), tokenizer, "text", examples)
    m = result.metrics
    assert m["exact_match"] == -1.0  # no reference answers
    assert m["primary"] == m["perplexity"] > 1.0
    assert m["improvement_over_base"] == pytest.approx(0.0)
    assert [c.name for c in result.checks] == ["perplexity_ratio"]
    assert ctx.cache["candidate:task_samples"] == []


def test_preference_rows_score_whether_the_chosen_answer_is_likelier(
    fitted, untrained, tokenizer
):
    def preference(swap: bool):
        return rows(
            "preference",
            [
                {
                    "prompt": f"Extract the order as JSON.\n\n{text}",
                    "chosen": '{"qty": 9}' if swap else ans,
                    "rejected": ans if swap else '{"qty": 9}',
                }
                for text, ans in ORDERS
            ],
        )

    assert primary_metric("preference", preference(False)) == "reward_accuracy"
    result, _ = run(fitted, untrained(), tokenizer, "preference", preference(False))
    m = result.metrics
    assert m["reward_accuracy"] == m["primary"] == 1.0
    assert 0.0 <= m["base_reward_accuracy"] <= 1.0
    assert m["exact_match"] == -1.0  # judged by likelihood, not generation
    swapped, _ = run(fitted, untrained(), tokenizer, "preference", preference(True))
    assert swapped.metrics["reward_accuracy"] == 0.0


def test_answer_logprobs_agree_with_the_answer_perplexity(untrained, tokenizer):
    model = untrained()
    (example,) = orders()[:1]
    features = datasets.tokenize_for_training(tokenizer, example, 256)
    answer_tokens = sum(label != -100 for label in features["labels"])
    (logprob,) = answer_logprobs(model, tokenizer, [example], 256)
    assert math.exp(-logprob / answer_tokens) == pytest.approx(
        perplexity(model, tokenizer, [example], 256), rel=1e-4
    )
    # Truncation that leaves no answer token: not scored, not "certain".
    assert math.isnan(answer_logprobs(model, tokenizer, [example], 4)[0])


@pytest.fixture
def classifier(tiny_model_dir, tokenizer):
    def make():
        return load_sequence_classifier(
            tiny_model_dir, ["neg", "pos"], tokenizer.pad_token_id
        ).eval()

    return make


def classify(model, tokenizer, examples, **kw):
    subject = Subject("candidate", "c", model, tokenizer, "classifier", ["neg", "pos"])
    ctx = SuiteContext(subject, task="classification", examples=examples, **kw)
    return TaskSuite().run(ctx)


def test_a_classifier_that_always_says_one_label_does_not_beat_the_majority(
    classifier, tokenizer
):
    import torch

    model = classifier()
    with torch.no_grad():  # equal logits: argmax is class 0, "neg"
        model.score.weight.zero_()
    examples = rows("classification", [{"text": t, "label": y} for t, y in SENTIMENT])
    examples.append(examples[1])  # neg, neg, neg vs pos, pos: majority 0.6
    result = classify(model, tokenizer, examples)
    m, checks = result.metrics, checks_of(result)
    assert m["accuracy"] == pytest.approx(0.6) == m["majority_rate"]
    # F1(neg) = 2*3 / (2*3 + 2) = 0.75, F1(pos) = 0: the majority answer's own.
    assert m["macro_f1"] == pytest.approx(0.375) == m["majority_macro_f1"]
    assert m["base_primary"] == pytest.approx(0.6)
    assert m["improvement_over_base"] == 0.0 and m["exact_match"] == -1.0
    assert not checks["accuracy_vs_majority"].passed
    assert "does not beat always answering" in (
        checks["accuracy_vs_majority"].recommendation
    )
    assert result.score < 1.0


def test_a_trained_classifier_beats_the_majority_and_meets_the_bar(
    classifier, tokenizer
):
    import torch

    model = classifier()
    texts = [t for t, _ in SENTIMENT]
    labels = torch.tensor([["neg", "pos"].index(y) for _, y in SENTIMENT])
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        model(**enc, labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    examples = rows("classification", [{"text": t, "label": y} for t, y in SENTIMENT])
    result = classify(
        model.eval(), tokenizer, examples, thresholds={"min_macro_f1": 0.9}
    )
    m = result.metrics
    assert m["accuracy"] == m["macro_f1"] == 1.0 and m["majority_rate"] == 0.5
    assert m["improvement_over_base"] == 1.0 and m["meets_task_bar"] == 1.0
    assert result.score == 1.0
    assert {c.name for c in result.checks} == {
        "accuracy_vs_majority",
        "macro_f1_vs_majority",
        "min_macro_f1",
    }


def test_the_suite_says_when_it_cannot_judge(untrained, tokenizer, classifier):
    suite = TaskSuite()
    causal = Subject("candidate", "c", untrained(), tokenizer)
    assert "no held-out examples" in suite.applies_to(SuiteContext(causal))
    examples = rows("classification", [{"text": "good", "label": "pos"}])
    ctx = SuiteContext(causal, task="classification", examples=examples)
    assert "no class head" in suite.applies_to(ctx)
    head = Subject("candidate", "c", classifier(), tokenizer, "classifier", ["a"])
    assert suite.applies_to(SuiteContext(head, examples=orders())) != ""
    assert suite.applies_to(SuiteContext(head, examples=examples)) == ""
