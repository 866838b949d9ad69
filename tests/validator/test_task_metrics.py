"""Task metrics on cases worked out by hand: exact match, JSON validity and
field match, accuracy, macro-F1, ROUGE-L, BLEU, reward accuracy."""

from __future__ import annotations

import math

import pytest

from services.validator import task_metrics as tm


def test_exact_match_ignores_whitespace_and_json_formatting_only():
    outputs = ["  Porto ", '{"qty":2, "name":"Ana"}', "porto", '{"qty": 3}']
    refs = ["Porto", '{"name": "Ana", "qty": 2}', "Porto", '{"qty": 2}']
    # Equal text; equal JSON value (key order, spacing); case differs; value differs.
    assert tm.exact_match(outputs, refs) == pytest.approx(2 / 4)


def test_json_validity_counts_rows_with_json_references_only():
    outputs = [
        '{"a": 1}',  # valid object
        "Sure! here it is",  # prose
        '```json\n{"a": 1}\n```',  # fenced: a client parsing it fails
        "[1]",  # JSON, but an array where an object is expected
        "anything",  # reference is not JSON: not counted
    ]
    refs = ['{"a": 1}', '{"a": 2}', '{"a": 1}', '{"b": 1}', "plain text"]
    assert tm.json_validity(outputs, refs) == pytest.approx(1 / 4)
    assert math.isnan(tm.json_validity(["{}"], ["no json here"]))


def test_json_field_match_gives_partial_credit_per_field():
    refs = ['{"name": "Ana", "qty": 2}', '{"city": "Porto"}', '{"x": 1}']
    outputs = ['{"name": "Ana", "qty": 3}', '{"city": "Porto", "extra": 1}', "oops"]
    assert tm.json_field_match(outputs, refs) == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_extraction_is_recognised_by_json_object_references():
    assert tm.is_extraction(['{"a": 1}', "[1, 2]"])
    assert not tm.is_extraction(['{"a": 1}', "42"])  # a bare number is not
    assert not tm.is_extraction([])


def test_accuracy_and_macro_f1_with_a_label_never_predicted():
    gold = ["a", "a", "b", "c"]
    pred = ["a", "a", "a", "b"]
    assert tm.accuracy(pred, gold) == 0.5
    # F1(a) = 2*2 / (2*2 + 1 + 0) = 0.8; F1(b) = 0 (1 FP, 1 FN);
    # F1(c) = 0 (never predicted, 1 FN). Mean over a, b, c.
    assert tm.macro_f1(pred, gold, ["a", "b", "c"]) == pytest.approx(0.8 / 3)
    # A declared label in neither list has no F1 to average (0/0): left out.
    assert tm.macro_f1(pred, gold, ["a", "b", "c", "d"]) == pytest.approx(0.8 / 3)
    assert tm.macro_f1(gold, gold) == 1.0
    assert tm.majority_rate(gold) == 0.5


def test_rouge_l_on_identical_disjoint_and_overlapping_answers():
    assert tm.rouge_l(["the cat sat"], ["the cat sat"]) == pytest.approx(1.0)
    assert tm.rouge_l(["dogs bark loudly"], ["the cat sat"]) == 0.0
    # LCS "the cat": precision = recall = 2/3.
    assert tm.rouge_l(["the cat ran"], ["the cat sat"]) == pytest.approx(2 / 3)
    # Non-Latin words count (rouge-score's default tokenizer drops them).
    assert tm.rouge_l(["ο γάτος κάθεται"], ["ο γάτος κάθεται"]) == pytest.approx(1.0)
    assert tm.rouge_l(["ο σκύλος"], ["ο γάτος"]) == pytest.approx(0.5)


def test_bleu_on_identical_and_disjoint_answers_short_ones_included():
    assert tm.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == 1.0
    assert tm.bleu(["Porto"], ["Porto"]) == 1.0  # under 4 words: effective order
    assert tm.bleu(["dogs bark loudly today"], ["the cat sat down"]) == 0.0
    partial = tm.bleu(["the cat sat on a mat"], ["the cat sat on the mat"])
    assert 0.0 < partial < 1.0


def test_reward_accuracy_counts_ties_as_misses_and_skips_unscored_rows():
    chosen = [-1.0, -2.0, -3.0, math.nan]
    rejected = [-2.0, -1.0, -3.0, 0.0]
    assert tm.reward_accuracy(chosen, rejected) == pytest.approx(1 / 3)


def test_improvement_is_relative_and_inverted_for_perplexity():
    assert tm.improvement("exact_match", 0.6, 0.5) == pytest.approx(0.2)
    assert tm.improvement("perplexity", 8.0, 10.0) == pytest.approx(0.25)
    assert tm.improvement("accuracy", 0.5, 0.0) == math.inf
    assert tm.improvement("accuracy", 0.0, 0.0) == 0.0


def test_empty_inputs_are_not_measured_and_lengths_must_agree():
    for metric in (tm.exact_match, tm.rouge_l, tm.bleu, tm.accuracy, tm.macro_f1):
        assert math.isnan(metric([], []))
    with pytest.raises(ValueError):
        tm.exact_match(["a"], ["a", "b"])
