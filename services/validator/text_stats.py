"""Detectors of degenerate output, on token ids (no tokenizer assumptions).

A merge or fine-tune that "finishes fine" and then babbles shows up two
ways: loops (the same n-grams over and over: low distinct-n, one n-gram
taking a large share) and fluent-looking gibberish, which only another model
can see (the base model's perplexity of the candidate's outputs, measured in
the basic suite). These are the cheap half.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(outputs: Sequence[Sequence[int]], n: int = 2) -> float:
    """Unique n-grams over all n-grams, per output, averaged over outputs
    long enough to have one (1.0 when none is: nothing repeated)."""
    ratios = []
    for tokens in outputs:
        grams = ngrams(tokens, n)
        if grams:
            ratios.append(len(set(grams)) / len(grams))
    return sum(ratios) / len(ratios) if ratios else 1.0


def top_ngram_share(outputs: Sequence[Sequence[int]], n: int = 3) -> float:
    """The largest share one n-gram takes of an output's n-grams, the worst
    output's (a loop of one phrase approaches 1)."""
    worst = 0.0
    for tokens in outputs:
        grams = ngrams(tokens, n)
        if len(grams) >= 4:  # too short to call anything a loop
            worst = max(worst, Counter(grams).most_common(1)[0][1] / len(grams))
    return worst


def same_output_share(texts: Sequence[str]) -> float:
    """The share of outputs equal to the most common one (an adapter that
    answers everything with one string: 1.0)."""
    if not texts:
        return 0.0
    normalised = [" ".join(t.split()) for t in texts]
    return Counter(normalised).most_common(1)[0][1] / len(normalised)
