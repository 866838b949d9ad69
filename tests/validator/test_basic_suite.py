"""The basic suite on the tiny llama: finite weights (critical), answers,
tokenizer and template checks, and the degeneracy detectors, against a
copy of the model as its base."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.modeling import load_causal_lm, load_tokenizer
from services.validator.suites import SUITES, suite
from services.validator.suites.base import Subject, SuiteContext


@pytest.fixture
def subjects(tiny_model_dir):
    def load(label: str) -> Subject:
        model = load_causal_lm(tiny_model_dir, "cpu").eval()
        return Subject(label, label, model, load_tokenizer(tiny_model_dir))

    return load


def checks_of(result) -> dict:
    return {c.name: c for c in result.checks}


def test_a_model_and_its_own_base_pass_the_relative_checks(subjects):
    result = suite("basic").run(
        SuiteContext(subjects("candidate"), subjects("base"), max_new_tokens=12)
    )
    checks = checks_of(result)
    assert checks["finite_weights"].passed and checks["generates"].passed
    assert checks["special_tokens"].passed and checks["chat_template"].passed
    # Greedy answers of the same weights: exactly as surprising as its own.
    assert result.metrics["gibberish_ratio"] == pytest.approx(1.0)
    assert checks["gibberish_ratio"].passed
    assert 0.0 < result.score <= 1.0


def test_nan_in_one_tensor_fails_critically_and_names_it(subjects):
    import torch

    candidate = subjects("candidate")
    with torch.no_grad():
        candidate.model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    result = suite("basic").run(SuiteContext(candidate, subjects("base")))
    check = checks_of(result)["finite_weights"]
    assert not check.passed and check.critical
    assert "layers.1.mlp.up_proj.weight holds 1 NaN/Inf" in check.message
    assert result.score == 0.0
    assert "NaN/Inf" in check.recommendation


def test_a_model_that_always_says_the_same_token_is_degenerate(subjects):
    import torch

    candidate = subjects("candidate")
    with torch.no_grad():  # every position's logits favour one token
        head = candidate.model.lm_head.weight
        head.zero_()
        head[17] = 1.0
    result = suite("basic").run(
        SuiteContext(candidate, subjects("base"), max_new_tokens=12)
    )
    checks = checks_of(result)
    for name in ("distinct_2", "top_trigram_share", "same_output_share"):
        assert not checks[name].passed, checks[name].message
    assert result.metrics["same_output_share"] == 1.0
    assert result.metrics["gibberish_ratio"] > 1.0
    assert result.score < 0.8
    assert any("loop" in advice for advice in [c.recommendation for c in result.checks])


def test_suites_are_found_by_name():
    assert "basic" in SUITES
    with pytest.raises(InvalidArgument, match="known suites: basic"):
        suite("vibes")
