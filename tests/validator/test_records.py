"""A validation outcome survives the job store: what a replica that takes a
job over reads back is what the first one recorded (NaN and infinities
included, which PostgreSQL's JSON refuses as numbers)."""

from __future__ import annotations

import json
import math

from services.common.jobqueue.tables import json_numbers
from services.validator.assessment import ComparisonResult
from services.validator.evaluation import ModelScores
from services.validator.gates import GateResult
from services.validator.records import VALIDATION_JOB_CODEC
from services.validator.spec import ValidationOutcome
from services.validator.suites.base import at_most, fold, holds


def test_an_outcome_round_trips_through_the_job_store():
    basic = fold(
        "basic",
        [
            holds("finite_weights", True, "every weight is finite", critical=True),
            at_most("gibberish_ratio", math.inf, 3.0, "no answers", "check it"),
        ],
        {"gibberish_ratio": math.inf, "distinct_2": 0.5},
    )
    outcome = ValidationOutcome(
        report_id="r1",
        candidate_id="c1",
        candidate=ModelScores(model_id="c1", perplexity=math.nan, loads=True),
        baseline=None,
        score=0.5,
        score_metric="exact_match",
        passed=False,
        gates=[GateResult("min_overall_score", False, 0.42, 0.8, "overall 0.42")],
        create_time=1.0,
        mode="comprehensive",
        suites=[basic],
        overall=0.42,
        grade="poor",
        weights={"basic": 1.0},
        recommendations=["check it"],
        comparisons=[
            ComparisonResult(
                "production",
                "m1",
                "a1",
                0.9,
                {"basic": 0.9},
                {"basic": -0.48},
                -0.48,
                "rouge_l",
                0.3,
                math.nan,
                False,
            )
        ],
        skipped={"safety": "a classifier has no answers"},
        grade_bounds=[("excellent", 0.9), ("good", 0.75)],
    )
    stored = json.loads(
        json.dumps(json_numbers(VALIDATION_JOB_CODEC.encode_result(outcome)))
    )
    back = VALIDATION_JOB_CODEC.decode_result(stored)
    assert back.mode == "comprehensive" and back.grade == "poor"
    assert back.suites[0].checks[1].value == math.inf
    assert back.suites[0].metrics["gibberish_ratio"] == math.inf
    assert back.suites[0].checks[0].critical and back.suites[0].score == basic.score
    assert math.isnan(back.candidate.perplexity)
    assert back.comparisons[0].suite_deltas == {"basic": -0.48}
    assert math.isnan(back.comparisons[0].task_improvement)
    assert back.skipped == outcome.skipped
    assert back.grade_bounds == outcome.grade_bounds
    assert back.gates[0].name == "min_overall_score"
