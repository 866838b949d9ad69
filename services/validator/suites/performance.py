"""The performance suite: latency, time to first token, decode speed and
memory on a fixed workload, relative to the version in production.

A fine-tune should cost what its reference costs: a candidate that is
slower or heavier than what the deployment serves now (a larger
configuration of the same family, an adapter left unmerged, a float32
export of a bfloat16 model) fails here, by how much it regressed. The
reference is the production version when one is named, else the base
model; with neither, the suite only reports its measurements (score 1.0)
unless absolute limits are given.

All subjects are timed together in `measure` (in turn, round by round),
never one after the other: under load, sequential timing once made an
identical candidate look 2.3x slower than its baseline. Timings are the
only non-deterministic numbers; the memory count, the workload and the
confidence intervals are exact for the same samples.

A classifier is left out: it generates no tokens, so it has no time to
first token nor decode speed, and its single forward pass costs less than
the base model's generation that the other suites already time.
"""

from __future__ import annotations

import math
import time

from services.validator.evaluation import latency_prompts
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
from services.validator.timing import Clock, Timing, time_subjects

MAX_SLOWDOWN = 1.5
DEFAULTS = {
    "latency_p50_ratio": MAX_SLOWDOWN,  # candidate / reference, at most
    "latency_p95_ratio": MAX_SLOWDOWN,
    "ttft_ratio": MAX_SLOWDOWN,
    "tokens_per_s_ratio": 1.0 / MAX_SLOWDOWN,  # at least
    "memory_ratio": 1.25,
}
# The tail of a dozen requests is close to their maximum: one hiccup of the
# machine moves it, so it counts half as much as the median.
P95_WEIGHT = 0.5
MEASURED = ("p50_ms", "p95_ms", "ttft_ms", "tokens_per_s", "ms_per_token")
SLOWER_ADVICE = (
    "a larger model or an unmerged adapter; merge the adapter or choose a smaller base"
)


def _ratio(mine: float, theirs: float) -> float:
    if theirs > 0 and math.isfinite(theirs):
        return mine / theirs
    return 1.0 if mine == theirs else math.inf


def _metrics(timing: Timing, prefix: str = "") -> dict[str, float]:
    metrics = {f"{prefix}{name}": float(getattr(timing, name)) for name in MEASURED}
    metrics[f"{prefix}memory_bytes"] = float(timing.memory_bytes)
    for name, ci in (
        ("p50_ms", timing.p50_ms_ci),
        ("tokens_per_s", timing.tokens_per_s_ci),
    ):
        if ci is not None:
            metrics[f"{prefix}{name}_ci_low"], metrics[f"{prefix}{name}_ci_high"] = ci
    return metrics


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


class PerformanceSuite(Suite):
    name = "performance"
    default_weight = 0.1

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        # Configuration, not state: tests drive a fake clock.
        self.clock = clock

    def applies_to(self, ctx: SuiteContext) -> str:
        if not ctx.candidate.generates:
            return (
                "a classifier generates no tokens: it has no time to first "
                "token or decode speed to compare"
            )
        return ""

    def measure(self, subjects: list[Subject], ctx: SuiteContext) -> None:
        """Times every generating subject together on the fixed workload and
        stores each one's `Timing` under `ctx.shared["performance"][label]`.
        Subjects sharing one loaded model are timed once (two timings of
        the same weights would differ only by noise)."""
        store = ctx.shared.setdefault(self.name, {})
        groups: dict[int, list[Subject]] = {}
        for subject in subjects:
            if subject.generates:
                groups.setdefault(id(subject.model), []).append(subject)
        timed = list(groups.values())
        timings = time_subjects(
            [
                (
                    g[0].model,
                    g[0].tokenizer,
                    latency_prompts(g[0].tokenizer, ctx.examples),
                )
                for g in timed
            ],
            rounds=max(1, ctx.sizes.timing_rounds),
            confidence_intervals=ctx.sizes.confidence_intervals,
            seed=ctx.seed,
            clock=self.clock,
        )
        for group, timing in zip(timed, timings, strict=True):
            for subject in group:
                store[subject.label] = timing

    def run(self, ctx: SuiteContext) -> SuiteResult:
        candidate = ctx.candidate
        reference = ctx.production if ctx.production is not None else ctx.base
        if reference is not None and not reference.generates:
            reference = None
        itself = reference is not None and (
            reference.label == candidate.label or reference.model is candidate.model
        )
        store = ctx.shared.get(self.name, {})
        wanted = [candidate] + ([reference] if reference and not itself else [])
        if any(s.label not in store for s in wanted):  # run without measure
            self.measure(wanted, ctx)
            store = ctx.shared[self.name]
        mine = store[candidate.label]
        metrics = _metrics(mine)
        metrics["timing_rounds"] = float(len(mine.rounds))
        checks: list[Check] = []
        if reference is not None:
            theirs = mine if itself else store[reference.label]
            metrics.update(_metrics(theirs, "ref_"))
            checks += self._relative(
                ctx, mine, theirs, reference.label, itself, metrics
            )
        checks += self._absolute(ctx, mine)
        return fold(self.name, checks, metrics)

    @staticmethod
    def _relative(
        ctx: SuiteContext,
        mine: Timing,
        theirs: Timing,
        ref: str,
        itself: bool,
        metrics: dict[str, float],
    ) -> list[Check]:
        def ratio(name: str, a: float, b: float) -> float:
            metrics[name] = 1.0 if itself else _ratio(a, b)
            return metrics[name]

        p50 = ratio("latency_p50_ratio", mine.p50_ms, theirs.p50_ms)
        p95 = ratio("latency_p95_ratio", mine.p95_ms, theirs.p95_ms)
        ttft = ratio("ttft_ratio", mine.ttft_ms, theirs.ttft_ms)
        speed = ratio("tokens_per_s_ratio", mine.tokens_per_s, theirs.tokens_per_s)
        memory = ratio("memory_ratio", mine.memory_bytes, theirs.memory_bytes)

        def limit(name: str) -> float:
            return ctx.threshold(name, DEFAULTS[name])

        return [
            at_most(
                "latency_p50_ratio",
                p50,
                limit("latency_p50_ratio"),
                f"p50 latency {mine.p50_ms:.1f} ms per request, {p50:.2f}x {ref}'s "
                f"{theirs.p50_ms:.1f} ms",
                f"p50 latency is {p50:.1f}x {ref}'s ({mine.p50_ms:.0f} ms vs "
                f"{theirs.p50_ms:.0f} ms): {SLOWER_ADVICE}",
            ),
            at_most(
                "latency_p95_ratio",
                p95,
                limit("latency_p95_ratio"),
                f"p95 latency {mine.p95_ms:.1f} ms per request, {p95:.2f}x {ref}'s "
                f"{theirs.p95_ms:.1f} ms",
                f"p95 latency is {p95:.1f}x {ref}'s ({mine.p95_ms:.0f} ms vs "
                f"{theirs.p95_ms:.0f} ms): {SLOWER_ADVICE}",
                weight=P95_WEIGHT,
            ),
            at_most(
                "ttft_ratio",
                ttft,
                limit("ttft_ratio"),
                f"time to first token {mine.ttft_ms:.1f} ms, {ttft:.2f}x {ref}'s "
                f"{theirs.ttft_ms:.1f} ms",
                f"the first token takes {ttft:.1f}x {ref}'s time ({mine.ttft_ms:.0f} "
                f"ms vs {theirs.ttft_ms:.0f} ms): a larger model or a longer chat "
                "template; merge the adapter or choose a smaller base",
            ),
            at_least(
                "tokens_per_s_ratio",
                speed,
                limit("tokens_per_s_ratio"),
                f"{mine.tokens_per_s:.1f} tokens/s decoding, {speed:.2f}x {ref}'s "
                f"{theirs.tokens_per_s:.1f}",
                f"decoding runs at {speed:.2f}x {ref}'s speed "
                f"({mine.tokens_per_s:.0f} vs {theirs.tokens_per_s:.0f} tokens/s): "
                f"{SLOWER_ADVICE}",
            ),
            at_most(
                "memory_ratio",
                memory,
                limit("memory_ratio"),
                f"the loaded model holds {_mib(mine.memory_bytes)}, {memory:.2f}x "
                f"{ref}'s {_mib(theirs.memory_bytes)}",
                f"the model takes {memory:.2f}x {ref}'s memory "
                f"({_mib(mine.memory_bytes)} vs {_mib(theirs.memory_bytes)}): a "
                "larger base, a wider dtype (float32 vs bfloat16) or unmerged "
                "adapter weights; merge the adapter, load in bfloat16 or quantise",
            ),
        ]

    @staticmethod
    def _absolute(ctx: SuiteContext, mine: Timing) -> list[Check]:
        checks = []
        if "max_p95_ms" in ctx.thresholds:
            checks.append(
                at_most(
                    "max_p95_ms",
                    mine.p95_ms,
                    ctx.thresholds["max_p95_ms"],
                    f"p95 latency {mine.p95_ms:.1f} ms per request",
                    "requests are slower than the limit: choose a smaller base, "
                    "merge the adapter or serve on a faster device",
                    weight=P95_WEIGHT,
                )
            )
        if "min_tokens_per_s" in ctx.thresholds:
            checks.append(
                at_least(
                    "min_tokens_per_s",
                    mine.tokens_per_s,
                    ctx.thresholds["min_tokens_per_s"],
                    f"{mine.tokens_per_s:.1f} tokens/s decoding",
                    "decoding is slower than the limit: choose a smaller base, "
                    "merge the adapter or serve on a faster device",
                )
            )
        return checks
