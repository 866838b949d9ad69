"""Task metrics over a model's answers and the references: pure, deterministic.

Each takes parallel lists (one output per reference) and returns a share in
[0, 1]; an empty input returns NaN ("not measured"), never a flattering 0 or 1.
The text metrics come from maintained libraries (rouge-score for ROUGE-L,
sacrebleu for BLEU) so the numbers agree with what people publish; the
classification ones are a few lines here, as scikit-learn would be a heavy
dependency for two formulas.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from services.validator.evaluation import normalise

NAN = float("nan")
# How each metric is named to people (messages, reports).
NAMES = {
    "exact_match": "exact match",
    "json_validity": "JSON validity",
    "json_field_match": "JSON field match",
    "rouge_l": "ROUGE-L",
    "bleu": "BLEU",
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "reward_accuracy": "reward accuracy",
}


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is one JSON document, else (False, None)."""
    try:
        return True, json.loads(text)
    except (ValueError, TypeError):
        return False, None


def _structured(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is a JSON object or array."""
    ok, value = parse_json(text)
    return (True, value) if ok and isinstance(value, dict | list) else (False, None)


def is_extraction(refs: Sequence[str]) -> bool:
    """Whether these references are an extraction task's: every one a JSON
    object or array. (A bare number or quoted word parses as JSON too, but a
    dataset of those is a short-answer task, not an extraction.)"""
    return bool(refs) and all(_structured(r)[0] for r in refs)


def _share(hits: Sequence[bool]) -> float:
    return sum(hits) / len(hits) if hits else NAN


def exact_match(outputs: Sequence[str], refs: Sequence[str]) -> float:
    """Share of outputs equal to their reference, whitespace aside.

    Where both sides are JSON objects/arrays, equal values also match (key
    order and spacing are formatting, not content: '{"a": 1}' == '{"a":1}').
    """
    hits = []
    for out, ref in zip(outputs, refs, strict=True):
        same = normalise(out) == normalise(ref)
        if not same:
            (ok_out, v_out), (ok_ref, v_ref) = _structured(out), _structured(ref)
            same = ok_out and ok_ref and v_out == v_ref
        hits.append(same)
    return _share(hits)


def json_validity(outputs: Sequence[str], refs: Sequence[str]) -> float:
    """Share of outputs that parse as JSON of the reference's kind (an object
    where the reference is an object), over the rows whose reference is a
    JSON object/array; NaN when none is.

    The raw answer is parsed as served: a code fence or a sentence around the
    JSON makes it invalid, because the client that consumes an extraction
    parses what it is sent.
    """
    hits = []
    for out, ref in zip(outputs, refs, strict=True):
        ok_ref, v_ref = _structured(ref)
        if ok_ref:
            ok_out, v_out = _structured(out)
            hits.append(ok_out and type(v_out) is type(v_ref))
    return _share(hits)


def json_field_match(outputs: Sequence[str], refs: Sequence[str]) -> float:
    """Mean share of each reference object's top-level fields that the output
    object holds with the same value (partial credit exact match cannot
    give: 3 of 4 fields right is 0.75, not 0); over rows whose reference is
    a non-empty JSON object, NaN when none is."""
    shares = []
    for out, ref in zip(outputs, refs, strict=True):
        ok_ref, v_ref = _structured(ref)
        if not ok_ref or not isinstance(v_ref, dict) or not v_ref:
            continue
        ok_out, v_out = _structured(out)
        got = v_out if ok_out and isinstance(v_out, dict) else {}
        same = sum(k in got and got[k] == v for k, v in v_ref.items())
        shares.append(same / len(v_ref))
    return sum(shares) / len(shares) if shares else NAN


def accuracy(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Share of predictions equal to the gold label."""
    return _share([p == g for p, g in zip(pred, gold, strict=True)])


def macro_f1(
    pred: Sequence[str], gold: Sequence[str], labels: Sequence[str] | None = None
) -> float:
    """Unweighted mean of per-label F1 (2·TP / (2·TP + FP + FN)).

    Written here rather than taken from scikit-learn, which is deliberately not
    a dependency. Labels are `labels` (in that order), else those seen; a label
    in neither the gold nor the predictions is left out (its F1 is 0/0, and a
    small held-out sample may simply not contain it), while a gold label that
    is never predicted counts, with F1 0.
    """
    pairs = list(zip(pred, gold, strict=True))
    if not pairs:
        return NAN
    seen = set(pred) | set(gold)
    names = [x for x in (labels if labels is not None else sorted(seen)) if x in seen]
    if not names:
        return NAN
    f1s = []
    for name in names:
        tp = sum(p == name and g == name for p, g in pairs)
        fp = sum(p == name and g != name for p, g in pairs)
        fn = sum(p != name and g == name for p, g in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


def majority_rate(gold: Sequence[str]) -> float:
    """Accuracy of always answering the most common gold label: what a
    classifier must beat to have learned anything."""
    if not gold:
        return NAN
    return max(gold.count(x) for x in set(gold)) / len(gold)


class _WordTokenizer:
    """Lower-cased Unicode word runs. rouge-score's default tokenizer keeps
    only [a-z0-9], so Greek, Cyrillic or CJK answers would all score 0 and
    every model would tie; on ASCII text the tokens are the same."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def rouge_l(outputs: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (longest common subsequence of words), by
    rouge-score without stemming."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordTokenizer())
    scores = [
        scorer.score(ref, out)["rougeL"].fmeasure
        for out, ref in zip(outputs, refs, strict=True)
    ]
    return sum(scores) / len(scores) if scores else NAN


def bleu(outputs: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU by sacrebleu (13a tokenisation), scaled to [0, 1].

    With effective order: answers shorter than four words have no 4-grams,
    and plain corpus BLEU would score even a perfect short answer 0.
    """
    import sacrebleu

    pairs = list(zip(outputs, refs, strict=True))
    if not pairs:
        return NAN
    score = sacrebleu.corpus_bleu(
        [o for o, _ in pairs], [[r for _, r in pairs]], use_effective_order=True
    ).score
    return max(0.0, min(1.0, score / 100.0))


def reward_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of preference rows whose chosen answer the model finds likelier
    than the rejected one (summed answer log-probabilities, as DPO compares
    them); a tie counts as a miss, and rows with a NaN side are left out."""
    hits = [
        c > r
        for c, r in zip(chosen, rejected, strict=True)
        if not (math.isnan(c) or math.isnan(r))
    ]
    return _share(hits)


def improvement(metric: str, value: float, base_value: float) -> float:
    """Relative gain over the base on `metric`: (value - base) / base, or
    base / value - 1 for perplexity (lower is better). Infinite when the base
    scored 0 and the candidate did not."""
    if metric == "perplexity":
        return base_value / value - 1.0 if value > 0 else math.nan
    if base_value > 0:
        return (value - base_value) / base_value
    return math.inf if value > 0 else 0.0
