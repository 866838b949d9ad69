"""The performance suite and its timing, on tiny random llamas.

Timing assertions compare models with each other (direction, wide margins)
or run on a fake clock that the models' own forward passes advance; none
depends on how fast this machine happens to be.
"""

from __future__ import annotations

import math

import pytest

from services.common.modeling import load_causal_lm, load_tokenizer
from services.common.prompts import Example
from services.validator import timing
from services.validator.evaluation import LATENCY_TOKENS
from services.validator.suites.base import Subject, SuiteContext
from services.validator.suites.performance import DEFAULTS, PerformanceSuite

EXAMPLES = [
    Example(
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": "ok"},
        ],
        completion="ok",
    )
    for question in (
        "Say hello to a new colleague.",
        "Name three colours of the rainbow.",
        "What is two plus three?",
        "Write a short sentence about the sea.",
    )
]
RATIOS = (
    "latency_p50_ratio",
    "latency_p95_ratio",
    "ttft_ratio",
    "tokens_per_s_ratio",
    "memory_ratio",
)
# Thresholds no timing noise can cross: only the memory check still judges.
LENIENT = {
    "latency_p50_ratio": 1e6,
    "latency_p95_ratio": 1e6,
    "ttft_ratio": 1e6,
    "tokens_per_s_ratio": 1e-6,
}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP barriers stall
    whenever another process holds a core, noise unrelated to the models."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny(tiny_model_dir):
    def load(label: str) -> Subject:
        model = load_causal_lm(tiny_model_dir, "cpu").eval()
        return Subject(label, label, model, load_tokenizer(tiny_model_dir))

    return load


@pytest.fixture(scope="module")
def larger(tiny_model_dir):
    """The same family, 4x the layers, 4x the width: ~60x the weights and
    far more than 4x the work per token of the tiny fixture."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(str(tiny_model_dir))
    config.num_hidden_layers *= 4
    config.hidden_size *= 4
    config.intermediate_size *= 8
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), load_tokenizer(tiny_model_dir)


def checks_of(result) -> dict:
    return {c.name: c for c in result.checks}


def test_a_larger_model_of_the_same_family_fails_against_production(tiny, larger):
    suite = PerformanceSuite()
    candidate = Subject("candidate", "big", *larger)
    production = tiny("production")
    ctx = SuiteContext(candidate, production=production, examples=EXAMPLES)
    suite.measure([candidate, production], ctx)
    assert set(ctx.shared["performance"]) == {"candidate", "production"}
    assert len(ctx.shared["performance"]["candidate"].rounds) == 3  # standard

    result = suite.run(ctx)
    m, checks = result.metrics, checks_of(result)
    expected = candidate.model.get_memory_footprint() / (
        production.model.get_memory_footprint()
    )
    assert m["memory_ratio"] == expected and expected > 50
    assert m["memory_bytes"] == candidate.model.get_memory_footprint()  # on CPU
    # Direction only, with wide margins (the larger model does ~60x the work).
    assert m["latency_p50_ratio"] > DEFAULTS["latency_p50_ratio"]
    assert m["tokens_per_s_ratio"] < DEFAULTS["tokens_per_s_ratio"]
    assert m["ttft_ratio"] > 1.0 and m["latency_p95_ratio"] > 1.0
    for name in ("latency_p50_ratio", "tokens_per_s_ratio", "memory_ratio"):
        assert not checks[name].passed, checks[name].message
        assert "production's" in checks[name].recommendation
    assert "merge the adapter" in checks["latency_p50_ratio"].recommendation
    assert m["ref_p50_ms"] == ctx.shared["performance"]["production"].p50_ms
    assert not result.passed and result.score < 0.8
    assert "p50_ms_ci_low" not in m  # intervals are comprehensive mode's

    # Production scored against itself: every ratio exactly 1, from the
    # same measurement (nothing timed again).
    own = suite.run(ctx.for_subject(production))
    assert all(own.metrics[name] == 1.0 for name in RATIOS)
    assert own.passed and own.score == 1.0
    assert own.metrics["p50_ms"] == m["ref_p50_ms"]


def test_a_model_against_a_second_load_of_itself(tiny):
    candidate, production = tiny("candidate"), tiny("production")
    ctx = SuiteContext(
        candidate, production=production, examples=EXAMPLES, thresholds=LENIENT
    )
    result = PerformanceSuite().run(ctx)  # measures both itself
    m = result.metrics
    assert m["memory_ratio"] == 1.0 and checks_of(result)["memory_ratio"].passed
    assert all(math.isfinite(m[name]) and m[name] > 0 for name in RATIOS)
    assert result.passed and result.score == 1.0
    assert set(ctx.shared["performance"]) == {"candidate", "production"}


def test_without_a_reference_it_measures_and_judges_only_absolute_limits(tiny):
    candidate = tiny("candidate")
    quick = SuiteContext(candidate, mode="quick", examples=EXAMPLES)
    result = PerformanceSuite().run(quick)
    assert result.checks == [] and result.score == 1.0
    assert result.metrics["timing_rounds"] == 1.0  # quick mode: 0 -> at least 1
    assert result.metrics["ms_per_token"] > 0 and result.metrics["tokens_per_s"] > 0
    assert not any(k.startswith("ref_") or k.endswith("_ratio") for k in result.metrics)

    impossible = {"max_p95_ms": 1e-9, "min_tokens_per_s": 1e12}
    ctx = SuiteContext(
        candidate, mode="quick", examples=EXAMPLES, thresholds=impossible
    )
    checks = checks_of(PerformanceSuite().run(ctx))
    assert set(checks) == {"max_p95_ms", "min_tokens_per_s"}
    assert not any(c.passed for c in checks.values())


def test_comprehensive_mode_gives_ordered_reproducible_intervals(tiny):
    candidate, production = tiny("candidate"), tiny("production")
    ctx = SuiteContext(
        candidate,
        production=production,
        mode="comprehensive",
        examples=EXAMPLES,
        thresholds=LENIENT,
    )
    suite = PerformanceSuite()
    suite.measure([candidate, production], ctx)
    m = suite.run(ctx).metrics
    for prefix in ("", "ref_"):
        for name in ("p50_ms", "tokens_per_s"):
            low, high = m[f"{prefix}{name}_ci_low"], m[f"{prefix}{name}_ci_high"]
            assert low <= m[f"{prefix}{name}"] <= high
    measured = ctx.shared["performance"]["candidate"]
    assert len(measured.rounds) == 7 and len(measured.round_tokens_per_s) == 7
    assert all(len(r) == len(EXAMPLES) for r in measured.rounds)
    again = timing.summarise(
        measured.rounds, measured.weight_bytes, confidence_intervals=True, seed=ctx.seed
    )
    assert again.p50_ms_ci == measured.p50_ms_ci
    assert again.tokens_per_s_ci == measured.tokens_per_s_ci
    assert (m["p50_ms_ci_low"], m["p50_ms_ci_high"]) == measured.p50_ms_ci


class FakeClock:
    """Seconds that pass only when a model runs a forward pass."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def charge(self, model, ms_per_forward: float) -> None:
        def advance(*_):
            self.now += ms_per_forward / 1000.0

        model.register_forward_hook(advance)


def test_timing_on_a_fake_clock_is_exact(tiny):
    """Prefill is one forward, each later token one more: with 1 ms and
    3 ms per forward every number and ratio is known exactly."""
    clock = FakeClock()
    fast, slow = tiny("fast"), tiny("slow")
    clock.charge(fast.model, 1.0)
    clock.charge(slow.model, 3.0)
    prompts = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"] * 2
    a, b = timing.time_subjects(
        [(s.model, s.tokenizer, prompts) for s in (fast, slow)], rounds=3, clock=clock
    )
    for t, ms in ((a, 1.0), (b, 3.0)):
        requests = [r for rnd in t.rounds for r in rnd]
        assert len(requests) == 6
        assert all(r.new_tokens == LATENCY_TOKENS for r in requests)
        assert t.ttft_ms == pytest.approx(ms)
        assert t.p50_ms == pytest.approx(ms * LATENCY_TOKENS)
        assert t.p95_ms == pytest.approx(ms * LATENCY_TOKENS)
        assert t.ms_per_token == pytest.approx(ms)
        assert t.ms_per_request == pytest.approx(ms * LATENCY_TOKENS)
        assert t.tokens_per_s == pytest.approx(1000.0 / ms)
    assert b.p50_ms / a.p50_ms == pytest.approx(3.0)
    assert a.memory_bytes == b.memory_bytes == fast.model.get_memory_footprint()


def test_models_take_turns_prompt_by_prompt_the_first_rotating(monkeypatch):
    calls: list[str] = []

    def fake_request(model, tokenizer, prompt, clock):
        calls.append(model)
        return timing.Request(10.0, 1.0, LATENCY_TOKENS), 0

    monkeypatch.setattr(timing, "time_request", fake_request)
    monkeypatch.setattr(timing, "weight_bytes", lambda model: 0)
    timing.time_subjects([("a", None, ["p", "q"]), ("b", None, ["p"])], rounds=3)
    # One untimed warm-up each; then prompt by prompt, the first rotating
    # at each prompt and each round (b has no second prompt).
    assert calls == ["a", "b"] + ["a", "b", "a"] + ["b", "a", "a"] + ["a", "b", "a"]


def test_weight_bytes_count_an_unmerged_adapter(tiny):
    from peft import LoraConfig, get_peft_model

    subject = tiny("candidate")
    base_bytes = timing.weight_bytes(subject.model)
    wrapped = get_peft_model(
        subject.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    lora = sum(
        p.nelement() * p.element_size()
        for name, p in wrapped.named_parameters()
        if "lora_" in name
    )
    assert lora > 0
    assert timing.weight_bytes(wrapped) == base_bytes + lora


def test_a_classifier_is_left_out():
    classifier = Subject("candidate", "clf", None, None, kind="classifier")
    ctx = SuiteContext(classifier)
    suite = PerformanceSuite()
    assert "generates no tokens" in suite.applies_to(ctx)
    suite.measure([classifier], ctx)
    assert ctx.shared["performance"] == {}
