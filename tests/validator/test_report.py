"""Folding suite results: check scores, critical failures, weights over the
suites that ran, grades and recommendations."""

from __future__ import annotations

import math

import pytest

from services.common.errors import InvalidArgument
from services.validator.report import (
    DEFAULT_WEIGHTS,
    check_grades,
    check_weights,
    fold_suites,
    grade_of,
)
from services.validator.suites.base import at_least, at_most, fold, holds

KNOWN = tuple(DEFAULT_WEIGHTS)


def test_checks_pass_at_their_threshold_and_give_partial_credit_below():
    assert at_least("em", 0.5, 0.5, "").passed
    half = at_least("em", 0.25, 0.5, "", "train longer")
    assert not half.passed and half.score == 0.5
    assert half.recommendation == "train longer"
    slow = at_most("latency", 4.0, 2.0, "", "use a smaller model")
    assert not slow.passed and slow.score == 0.5
    assert at_most("latency", 2.0, 2.0, "", "x").recommendation == ""
    nan = at_least("ppl", math.nan, 1.0, "")
    assert not nan.passed and nan.score == 0.0


def test_a_failed_critical_check_zeroes_its_suite():
    checks = [
        holds("finite_weights", False, "NaN in layer 3", critical=True),
        at_least("distinct_2", 0.9, 0.3, ""),
    ]
    assert fold("basic", checks, {}).score == 0.0
    checks[0] = holds("finite_weights", True, "all finite", critical=True)
    assert fold("basic", checks, {}).score == 1.0
    weighted = fold(
        "task",
        [at_least("a", 0.0, 1.0, "", weight=3.0), at_least("b", 1.0, 1.0, "")],
        {},
    )
    assert weighted.score == pytest.approx(0.25)


def test_overall_is_weighted_over_the_suites_that_ran():
    basic = fold("basic", [holds("ok", True, "")], {})
    task = fold("task", [at_least("em", 0.0, 1.0, "", "more data")], {})
    verdict = fold_suites([basic, task])
    # 0.4 and 0.3 renormalised to 4/7 and 3/7: a quick run is not capped.
    assert verdict.overall == pytest.approx(4 / 7)
    assert verdict.weights == pytest.approx({"basic": 4 / 7, "task": 3 / 7})
    assert verdict.grade == "poor"
    assert verdict.recommendations == ["more data"]
    custom = fold_suites([basic, task], {"task": 0.0})
    assert custom.overall == pytest.approx(1.0) and custom.grade == "excellent"


def test_grades_follow_their_bounds():
    assert [grade_of(s) for s in (0.95, 0.9, 0.8, 0.6, 0.59)] == [
        "excellent",
        "excellent",
        "good",
        "fair",
        "poor",
    ]
    assert grade_of(0.7, (("ship", 0.7),)) == "ship"
    with pytest.raises(InvalidArgument, match="descend"):
        check_grades((("good", 0.5), ("excellent", 0.9)))


@pytest.mark.parametrize(
    "weights, field, words",
    [
        ({"vibes": 1.0}, "weights.vibes", "known suites: basic, task"),
        ({"task": -0.1}, "weights.task", ">= 0"),
        ({"basic": 0.0, "task": 0.0}, "weights", "sum to 0"),
    ],
)
def test_bad_weights_are_refused_with_what_is_wrong(weights, field, words):
    with pytest.raises(InvalidArgument, match=words) as caught:
        check_weights(weights, KNOWN)
    assert caught.value.field == field


def test_degeneracy_detectors_see_loops_and_one_answer_for_everything():
    from services.validator.text_stats import (
        distinct_n,
        same_output_share,
        top_ngram_share,
    )

    varied = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]]
    loop = [[5, 6, 7] * 6]
    assert distinct_n(varied) == 1.0
    assert distinct_n(loop) < 0.25
    assert top_ngram_share(varied) <= 0.25 < 0.35 < top_ngram_share(loop)
    assert distinct_n([[1]]) == 1.0  # too short to repeat anything
    assert same_output_share(["ok", " ok ", "ok"]) == 1.0
    assert same_output_share(["a", "b", "c", "a"]) == 0.5


def test_the_task_bar_is_judged_against_the_base_only():
    import math

    from services.validator.assessment import compare, improvement
    from services.validator.report import fold_suites
    from services.validator.suites.base import fold

    def verdict(exact: float):
        return fold_suites([fold("task", [], {"exact_match": exact})])

    assert improvement("exact_match", 0.9, 0.6) == pytest.approx(0.5)
    assert improvement("exact_match", 1.0, 0.0) == math.inf  # from nothing
    assert improvement("perplexity", 2.0, 3.0) == pytest.approx(0.5)
    vs_base = compare("base", "b", "", verdict(1.0), verdict(0.0), "exact_match")
    assert vs_base.meets_task_bar and vs_base.task_improvement == math.inf
    vs_prod = compare("production", "p", "", verdict(1.0), verdict(0.5), "exact_match")
    assert vs_prod.task_improvement == pytest.approx(1.0)
    assert not vs_prod.meets_task_bar
