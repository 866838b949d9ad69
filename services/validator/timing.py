"""Timing loaded models on one fixed workload: latency, first token, speed, memory.

Each request is batch 1, greedy, exactly `LATENCY_TOKENS` new tokens (so a
model that would answer briefly does the same work as one that rambles).
The models take turns round by round, the first one rotating, as
`evaluation.time_alternately` does: load from other work on the machine
comes and goes, and timed this way it hits every model alike, so a ratio
of two models' numbers measures the models, not when each happened to run.

Time to first token is read from a `generate()` streamer inside the same
request, not from a separate one-token generation: the prefill then
belongs to the very run whose total it is part of, so TTFT <= latency
always, decode time (latency - TTFT) is never negative, and no second
request adds its own noise (or doubles the prefill work). A model whose
`generate` ignores streamers falls back to a timed one-token request.

Everything but the timings is deterministic: the workload, the memory
count, and the bootstrap confidence intervals (seeded; the same samples
give the same interval).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.generation import eos_ids
from services.validator.evaluation import LATENCY_TOKENS, TIMING_ROUNDS

# A clock in seconds; tests pass a fake one (time is a dependency).
Clock = Callable[[], float]
CI_LEVEL = 0.95
CI_RESAMPLES = 2000


@dataclass(frozen=True)
class Request:
    """One timed request of the workload."""

    latency_ms: float
    ttft_ms: float
    new_tokens: int

    @property
    def decode_ms(self) -> float:
        return max(0.0, self.latency_ms - self.ttft_ms)


@dataclass
class Timing:
    """One model's numbers on the workload.

    Latency and TTFT percentiles pool every request of every round; speed
    and ms per token are medians over rounds (a round is the unit machine
    load varies by). `memory_bytes` is the loaded model's parameters and
    buffers plus, on CUDA, the most its requests allocated on top (KV cache,
    activations); on CPU it is the resident weights alone, since a process
    shared by several models has no per-model peak to read.
    """

    p50_ms: float  # latency per request
    p95_ms: float
    ttft_ms: float  # p50 time to first token (prefill + first token)
    tokens_per_s: float  # decode speed: tokens after the first / time after it
    ms_per_token: float  # round time / tokens (the legacy latency number)
    weight_bytes: int
    peak_extra_bytes: int
    rounds: list[list[Request]] = field(default_factory=list)
    round_ms_per_token: list[float] = field(default_factory=list)
    round_tokens_per_s: list[float] = field(default_factory=list)
    # 95% percentile-bootstrap intervals, when asked for.
    p50_ms_ci: tuple[float, float] | None = None
    tokens_per_s_ci: tuple[float, float] | None = None

    @property
    def memory_bytes(self) -> int:
        return self.weight_bytes + self.peak_extra_bytes

    @property
    def ms_per_request(self) -> float:
        """The legacy `latency_ms_per_request`: ms per token x LATENCY_TOKENS."""
        return self.ms_per_token * LATENCY_TOKENS


def weight_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers.

    Summed over the module tree rather than read from transformers'
    `get_memory_footprint()`, which a PEFT wrapper does not define itself:
    the wrapper's tree holds the base weights and the adapter's alike, and
    `parameters()` counts a tied embedding once. Quantised weights count
    their packed storage.
    """
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.nelement() * t.element_size() for t in tensors)


def _ms_per_token(requests: list[Request]) -> float:
    tokens = sum(r.new_tokens for r in requests)
    return sum(r.latency_ms for r in requests) / tokens if tokens else math.inf


def _tokens_per_s(requests: list[Request]) -> float:
    """Decode speed: the first token's wait is TTFT's, so it is left out of
    both the tokens and the time (else prefill would pass for decoding)."""
    tokens = sum(max(0, r.new_tokens - 1) for r in requests)
    ms = sum(r.decode_ms for r in requests)
    if tokens and ms > 0:
        return 1000.0 * tokens / ms
    total = sum(r.latency_ms for r in requests)  # one-token answers
    return 1000.0 * sum(r.new_tokens for r in requests) / total if total else 0.0


def _percentile(values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def _pooled_p50(rounds: Sequence[list[Request]]) -> float:
    return _percentile([r.latency_ms for rnd in rounds for r in rnd], 50)


def _median_speed(rounds: Sequence[list[Request]]) -> float:
    return statistics.median(_tokens_per_s(rnd) for rnd in rounds)


def bootstrap_ci(
    rounds: list[list[Request]],
    statistic: Callable[[Sequence[list[Request]]], float],
    seed: int,
    resamples: int = CI_RESAMPLES,
    level: float = CI_LEVEL,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic`, resampling whole rounds.

    Rounds, not requests, are resampled: requests in one round share its
    machine load, so treating them as independent would understate the
    spread. The generator is seeded, so the same rounds give the same
    interval. With few rounds the percentile interval of a median can sit
    to one side of the estimate; it is widened to include it, so it never
    claims more precision than the estimate itself.
    """
    import numpy as np

    estimate = statistic(rounds)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(rounds), size=(resamples, len(rounds)))
    values = [statistic([rounds[i] for i in pick]) for pick in picks]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return min(float(low), estimate), max(float(high), estimate)


def summarise(
    rounds: list[list[Request]],
    weight_bytes: int,
    peak_extra_bytes: int = 0,
    *,
    confidence_intervals: bool = False,
    seed: int = 0,
) -> Timing:
    """A model's `Timing` from its timed rounds (pure: no clock, no model)."""
    if not rounds or not all(rounds):
        raise ValueError("timing needs at least one round of at least one request")
    requests = [r for rnd in rounds for r in rnd]
    round_ms = [_ms_per_token(rnd) for rnd in rounds]
    round_speed = [_tokens_per_s(rnd) for rnd in rounds]
    timing = Timing(
        p50_ms=_pooled_p50(rounds),
        p95_ms=_percentile([r.latency_ms for r in requests], 95),
        ttft_ms=_percentile([r.ttft_ms for r in requests], 50),
        tokens_per_s=statistics.median(round_speed),
        ms_per_token=statistics.median(round_ms),
        weight_bytes=weight_bytes,
        peak_extra_bytes=peak_extra_bytes,
        rounds=rounds,
        round_ms_per_token=round_ms,
        round_tokens_per_s=round_speed,
    )
    if confidence_intervals:
        timing.p50_ms_ci = bootstrap_ci(rounds, _pooled_p50, seed)
        timing.tokens_per_s_ci = bootstrap_ci(rounds, _median_speed, seed)
    return timing


class _FirstToken:
    """A `generate()` streamer that notes when the first new token arrives.

    generate hands a streamer the prompt first, then each token as it is
    chosen (moved to the CPU, so the device has finished computing it).
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.puts = 0
        self.at: float | None = None

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:
            self.at = self.clock()

    def end(self) -> None:
        pass


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate(model, tokenizer, enc, new_tokens: int, streamer: Any = None):
    import torch

    with torch.inference_mode():
        return model.generate(
            **enc,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            eos_token_id=eos_ids(model, tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            streamer=streamer,
        )


def time_request(model, tokenizer, prompt: str, clock: Clock) -> tuple[Request, int]:
    """Times one request; returns it and, on CUDA, the bytes it allocated
    beyond what was resident before it (0 on CPU)."""
    import torch

    device = next(model.parameters()).device
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
    cuda = device.type == "cuda"
    if cuda:
        _sync(device)
        resident = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    first = _FirstToken(clock)
    started = clock()
    out = _generate(model, tokenizer, enc, LATENCY_TOKENS, first)
    _sync(device)
    ended = clock()
    extra = torch.cuda.max_memory_allocated(device) - resident if cuda else 0
    if first.at is None:  # a generate that ignores streamers
        started_one = clock()
        _generate(model, tokenizer, enc, 1)
        _sync(device)
        first.at = started + (clock() - started_one)
    new_tokens = int(out.shape[1] - enc["input_ids"].shape[1])
    ttft = min(first.at, ended) - started
    request = Request(1000.0 * (ended - started), 1000.0 * ttft, new_tokens)
    return request, max(0, int(extra))


def time_subjects(
    subjects: Sequence[tuple[Any, Any, list[str]]],
    rounds: int = TIMING_ROUNDS,
    *,
    confidence_intervals: bool = False,
    seed: int = 0,
    clock: Clock = time.perf_counter,
    warmup: bool = True,
) -> list[Timing]:
    """Times each (model, tokenizer, prompts) on its workload, in turn.

    Prompt by prompt the models take turns, the one going first rotating at
    every prompt and every round, so requests of different models run
    seconds apart and a neighbour's burst of load falls on all of them
    alike. (Timing one model's whole round and then the other's let a
    machine busy for half a minute make one model look 3x slower: the
    demo's canary under a concurrent test run.) A round is still each
    model's own list of requests. With `warmup`, each model first answers
    one untimed request, so one-time costs (lazy initialisation, allocator
    growth, kernel selection) do not pass for its tail latency.
    """
    if not subjects:
        return []
    rounds = max(1, rounds)
    if warmup:
        for model, tokenizer, prompts in subjects:
            time_request(model, tokenizer, prompts[0], clock)
    timed: list[list[list[Request]]] = [[] for _ in subjects]
    peaks = [0] * len(subjects)
    count = len(subjects)
    longest = max(len(prompts) for _, _, prompts in subjects)
    for round_ in range(rounds):
        requests: list[list[Request]] = [[] for _ in subjects]
        for k in range(longest):
            for offset in range(count):
                i = (round_ + k + offset) % count
                model, tokenizer, prompts = subjects[i]
                if k < len(prompts):
                    request, extra = time_request(model, tokenizer, prompts[k], clock)
                    requests[i].append(request)
                    peaks[i] = max(peaks[i], extra)
        for i in range(count):
            timed[i].append(requests[i])
    return [
        summarise(
            timed[i],
            weight_bytes(model),
            peaks[i],
            confidence_intervals=confidence_intervals,
            seed=seed,
        )
        for i, (model, _, _) in enumerate(subjects)
    ]
