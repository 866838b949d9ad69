"""The basic suite: the model loads and answers, its tokenizer and chat
template work, its weights are finite, and its answers are not degenerate.

Degenerate means looping (low distinct-2, one trigram taking over), one
answer for everything, or fluent-looking gibberish: text the base model
finds far less likely than its own answers to the same prompts (a merge
with a broken tensor "finishes fine" and then babbles; mergekit's users
report exactly that). The probes are general requests, not the task's
data, so a task adapter is judged on whether it still speaks the language.
"""

from __future__ import annotations

import math

from services.common.generation import generate_batch
from services.common.prompts import Example, has_chat_template, render_prompt
from services.validator.evaluation import perplexity
from services.validator.suites.base import (
    Check,
    Subject,
    Suite,
    SuiteContext,
    SuiteResult,
    at_least,
    at_most,
    fold,
    holds,
)
from services.validator.text_stats import distinct_n, same_output_share, top_ngram_share

PROBES = (
    "Say hello to a new colleague.",
    "Name three colours of the rainbow.",
    "Explain in one sentence what a library is.",
    "Write a short sentence about the sea.",
    "What is two plus three?",
    "Give one tip for sleeping well.",
)
ROUND_TRIP_TEXTS = (
    "Order for Ana: 2 x socks, ship to Porto.",
    '{"name": "Zoë", "qty": 3, "note": "naïve café — 10% off"}',
    "Line one\nLine two\twith a tab",
    "数字 123 と emoji 🙂",
)
# A model that loops or babbles answers nothing useful however tidy its
# tokenizer: the output checks weigh double.
OUTPUT_WEIGHT = 2.0
DEFAULTS = {
    "distinct_2": 0.5,  # unique bigrams per answer, mean
    "top_trigram_share": 0.3,  # worst answer
    "same_output_share": 0.5,  # share of probes given the most common answer
    "gibberish_ratio": 3.0,  # base perplexity of its answers / of its own
}


def _answers(subject: Subject, ctx: SuiteContext) -> list:
    """Greedy answers to the probes."""
    prompts = [
        render_prompt(subject.tokenizer, [{"role": "user", "content": p}])
        for p in PROBES
    ]
    outputs, _ = generate_batch(
        subject.model, subject.tokenizer, prompts, max_new_tokens=ctx.max_new_tokens
    )
    return outputs


def _base_perplexity(base: Subject, answers: list[str]) -> float:
    """How surprised the base model is by these answers to the probes."""
    examples = [
        Example(
            messages=[
                {"role": "user", "content": probe},
                {"role": "assistant", "content": answer},
            ],
            completion=answer,
        )
        for probe, answer in zip(PROBES, answers, strict=True)
        if answer.strip()
    ]
    if not examples:
        return math.inf
    return perplexity(base.model, base.tokenizer, examples, max_length=1024)


def finite_weights(model) -> tuple[bool, str]:
    """Whether every parameter is finite; else the first one that is not."""
    import torch

    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            bad = int((~torch.isfinite(param)).sum())
            return False, f"{name} holds {bad} NaN/Inf value(s)"
    return True, "every weight is finite"


def _classifier_checks(subject: Subject) -> list[Check]:
    """A classifier answers with one finite score per label."""
    import torch

    tok = subject.tokenizer
    enc = tok(list(PROBES[:2]), return_tensors="pt", padding=True)
    device = next(subject.model.parameters()).device
    with torch.inference_mode():
        logits = subject.model(**enc.to(device)).logits
    shape_ok = logits.shape[-1] == len(subject.labels)
    finite = bool(torch.isfinite(logits).all())
    round_trip = [
        t
        for t in ROUND_TRIP_TEXTS
        if tok.decode(tok.encode(t, add_special_tokens=False)) != t
    ]
    return [
        holds(
            "classifies",
            shape_ok and finite,
            f"{logits.shape[-1]} finite label scores per text for "
            f"{len(subject.labels)} labels"
            if shape_ok and finite
            else f"scores of shape {tuple(logits.shape)} (finite: {finite}) for "
            f"{len(subject.labels)} labels",
            "the classification head does not match the labels: retrain with "
            "the dataset's label set",
            critical=True,
        ),
        holds(
            "tokenizer_round_trip",
            not round_trip,
            "decode(encode(text)) gives the text back"
            if not round_trip
            else f"{len(round_trip)} of {len(ROUND_TRIP_TEXTS)} texts change in a "
            f"round trip, e.g. {round_trip[0]!r}",
            "ship the tokenizer the model was trained with (tokenizer_source)",
        ),
    ]


def _tokenizer_checks(subject: Subject) -> list[Check]:
    tok = subject.tokenizer
    broken = [
        t
        for t in ROUND_TRIP_TEXTS
        if tok.decode(tok.encode(t, add_special_tokens=False)) != t
    ]
    vocab = subject.model.get_input_embeddings().weight.shape[0]
    eos = tok.eos_token_id
    templated = has_chat_template(tok)
    rendered = render_prompt(tok, [{"role": "user", "content": PROBES[0]}])
    return [
        holds(
            "tokenizer_round_trip",
            not broken,
            "decode(encode(text)) gives the text back"
            if not broken
            else f"{len(broken)} of {len(ROUND_TRIP_TEXTS)} texts change in a "
            f"round trip, e.g. {broken[0]!r}",
            "ship the tokenizer the model was trained with (tokenizer_source)",
        ),
        holds(
            "special_tokens",
            eos is not None and 0 <= eos < vocab,
            f"eos token id {eos} in a vocabulary of {vocab}",
            "set the tokenizer's eos token to one the model's embedding has",
        ),
        holds(
            "chat_template",
            templated and PROBES[0] in rendered,
            "chat template present and applied"
            if templated
            else "no chat template: prompts fall back to a plain instruction format",
            "keep the base model's chat template (chat_template) with the model",
            weight=0.5,
        ),
    ]


class BasicSuite(Suite):
    name = "basic"
    default_weight = 0.4

    def run(self, ctx: SuiteContext) -> SuiteResult:
        subject = ctx.candidate
        finite, where = finite_weights(subject.model)
        checks = [
            holds(
                "finite_weights",
                finite,
                where,
                "a tensor holds NaN/Inf: check the merge inputs and weights "
                "(a diverged training run or an overflowing fp16 merge)",
                critical=True,
            )
        ]
        metrics: dict[str, float] = {}
        if not finite:  # its answers would only repeat the finding
            return fold(self.name, checks, metrics)
        if not subject.generates:
            return fold(self.name, checks + _classifier_checks(subject), metrics)
        outputs = ctx.memo(subject, "basic_answers", lambda: _answers(subject, ctx))
        answered = sum(o.completion_tokens > 0 for o in outputs)
        checks.append(
            holds(
                "generates",
                answered == len(outputs),
                f"{answered} of {len(outputs)} probes answered",
                "the model produces no tokens: check its eos token and weights",
                critical=True,
            )
        )
        checks += _tokenizer_checks(subject)
        ids = [o.token_ids for o in outputs]
        texts = [o.text for o in outputs]
        metrics["distinct_2"] = distinct_n(ids, 2)
        metrics["top_trigram_share"] = top_ngram_share(ids, 3)
        metrics["same_output_share"] = same_output_share(texts)
        loop_advice = (
            "the answers loop: lower the learning rate, train fewer steps, or "
            "check the merge weights"
        )
        checks += [
            at_least(
                "distinct_2",
                metrics["distinct_2"],
                ctx.threshold("distinct_2", DEFAULTS["distinct_2"]),
                f"distinct-2 {metrics['distinct_2']:.2f} over {len(ids)} probe answers",
                loop_advice,
                weight=OUTPUT_WEIGHT,
            ),
            at_most(
                "top_trigram_share",
                metrics["top_trigram_share"],
                ctx.threshold("top_trigram_share", DEFAULTS["top_trigram_share"]),
                f"the most repeated trigram is {metrics['top_trigram_share']:.0%} "
                "of an answer",
                loop_advice,
                weight=OUTPUT_WEIGHT,
            ),
            at_most(
                "same_output_share",
                metrics["same_output_share"],
                ctx.threshold("same_output_share", DEFAULTS["same_output_share"]),
                f"{metrics['same_output_share']:.0%} of the probes got the same answer",
                "the model answers everything alike: the dataset may repeat one "
                "answer; deduplicate it or add varied examples",
                weight=OUTPUT_WEIGHT,
            ),
        ]
        if ctx.base is not None:
            base = ctx.base
            own = ctx.memo(
                base,
                "basic_own_perplexity",
                lambda: _base_perplexity(
                    base,
                    [
                        o.text
                        for o in ctx.memo(
                            base, "basic_answers", lambda: _answers(base, ctx)
                        )
                    ],
                ),
            )
            theirs = _base_perplexity(base, texts)
            ratio = theirs / own if own > 0 and math.isfinite(own) else math.inf
            metrics["base_perplexity_of_answers"] = theirs
            metrics["gibberish_ratio"] = ratio
            checks.append(
                at_most(
                    "gibberish_ratio",
                    ratio,
                    ctx.threshold("gibberish_ratio", DEFAULTS["gibberish_ratio"]),
                    f"the base model finds these answers {ratio:.2f}x as surprising "
                    f"as its own (perplexity {theirs:.1f} vs {own:.1f})",
                    "the answers read as gibberish to the base model: check the "
                    "merge (a scaled or corrupted tensor) or lower the learning rate",
                    weight=OUTPUT_WEIGHT,
                )
            )
        return fold(self.name, checks, metrics)
