"""Continuous batching on a tiny random model with two random LoRA adapters.

Every request in a shared batch must produce what it would alone: greedy
output token-identical to `generate` with only its adapter, whatever joins or
leaves around it. Waits are on events (each request's own results), never on
wall-clock bounds.
"""

from __future__ import annotations

import threading

import pytest

from services.common.errors import Cancelled, DeadlineExceeded, ResourceExhausted
from services.inference.batch import BASE_ADAPTER
from services.inference.sampling import RowSampler
from services.inference.scheduler import BatchScheduler, SchedulerSettings, Sequence
from tests.inference.helpers import alone


def greedy(ids, adapter, new, **kw) -> Sequence:
    # eos never ends these: the reference generates exactly `new` tokens.
    return Sequence(ids, adapter, new, RowSampler(0.0, 1.0, 0), frozenset(), **kw)


@pytest.fixture
def scheduler(tiny):
    made = []

    def make(**settings):
        model, tok = tiny
        sched = BatchScheduler("tiny", model, tok, SchedulerSettings(**settings))
        made.append(sched)
        return sched

    yield make
    for sched in made:
        sched.close()


def finish(seq: Sequence):
    return list(seq.results())[-1][1]


REQUESTS = [
    ([5, 9, 33, 12, 7], "a1", 12),
    ([40, 41, 42], "a2", 7),
    ([8] * 11, BASE_ADAPTER, 15),
    ([3, 4], "a1", 9),
    ([60, 61, 62, 63, 64, 65, 66], "a2", 20),
]


def test_mixed_adapters_in_one_batch_match_generating_alone(tiny, scheduler):
    model, _ = tiny
    expected = [alone(model, *r) for r in REQUESTS]
    sched = scheduler(max_batch=8)
    seqs = [sched.submit(greedy(*r)) for r in REQUESTS]
    results = [finish(s) for s in seqs]
    assert [s.generated for s in seqs] == expected
    assert [r.completion_tokens for r in results] == [r[2] for r in REQUESTS]
    assert {r.finish_reason for r in results} == {"length"}
    # They shared steps: far fewer than one per token of every request.
    assert sched.steps < sum(r[2] for r in REQUESTS)


def test_requests_joining_mid_decode_and_a_small_batch_match_too(tiny, scheduler):
    model, _ = tiny
    expected = [alone(model, *r) for r in REQUESTS]
    sched = scheduler(max_batch=2, prefill_tokens_per_step=4)
    first = sched.submit(greedy(*REQUESTS[4]))
    # Wait until it is decoding, then send the rest: they join its batch two
    # at a time as rows leave.
    next(first.results())
    rest = [sched.submit(greedy(*r)) for r in REQUESTS[:4]]
    finish(first)
    for seq in rest:
        finish(seq)
    assert [s.generated for s in [*rest, first]] == expected


def test_the_same_seed_gives_the_same_text_whatever_shares_the_batch(scheduler):
    sched = scheduler()

    def sampled(seed):
        return Sequence([5, 9, 33], "a1", 10, RowSampler(0.9, 0.9, seed), frozenset())

    lone = sched.submit(sampled(42))
    finish(lone)
    crowd = [sched.submit(sampled(s)) for s in (42, 7, 42, 8)]
    for seq in crowd:
        finish(seq)
    assert crowd[0].generated == lone.generated == crowd[2].generated
    assert crowd[1].generated != crowd[0].generated or (
        crowd[3].generated != crowd[0].generated
    )


def test_cancelled_requests_leave_and_the_others_finish(tiny, scheduler):
    model, _ = tiny
    sched = scheduler(max_batch=8)
    keep = sched.submit(greedy(*REQUESTS[0]))
    gone = [sched.submit(greedy([7, 8, 9], "a2", 200)) for _ in range(50)]
    for seq in gone:
        seq.cancel()
    for seq in gone:
        with pytest.raises(Cancelled):
            finish(seq)
    assert finish(keep).completion_tokens == REQUESTS[0][2]
    assert keep.generated == alone(model, *REQUESTS[0])
    assert all(len(seq.generated) < 200 for seq in gone)
    assert sched.pending() == (0, 0)


def test_a_request_past_its_deadline_leaves_with_deadline_exceeded(tiny):
    model, tok = tiny
    now = [0.0]
    sched = BatchScheduler("tiny", model, tok, clock=lambda: now[0])
    try:
        late = Sequence(
            [5, 9], "a1", 500, RowSampler(0, 1, 0), frozenset(), deadline=5.0
        )
        sched.submit(late)
        stream = late.results()
        next(stream)  # decoding: now its deadline passes
        now[0] = 6.0
        with pytest.raises(DeadlineExceeded, match="of 500 new tokens"):
            list(stream)
        assert len(late.generated) < 500
    finally:
        sched.close()


def test_a_full_queue_refuses_with_a_retry_hint(tiny):
    model, tok = tiny
    lock = threading.Lock()
    sched = BatchScheduler(
        "tiny", model, tok, SchedulerSettings(max_batch=1, max_queue=2), model_lock=lock
    )
    try:
        with lock:  # the loop cannot run a forward: everything stays queued
            running = sched.submit(greedy([5, 9], "a1", 3))
            # Until the loop has taken `running`, it still counts as waiting.
            queued = [sched.submit(greedy([5, 9], "a1", 3))]
            while sched.pending()[0] >= 2:
                pass  # the loop takes `running` before it blocks on the lock
            queued.append(sched.submit(greedy([5, 9], "a1", 3)))
            with pytest.raises(
                ResourceExhausted, match="queue for tiny is full"
            ) as full:
                sched.submit(greedy([5, 9], "a1", 3))
            assert full.value.retry_after_s > 0
        for seq in [running, *queued]:
            assert finish(seq).completion_tokens == 3
    finally:
        sched.close()


def test_stop_strings_end_the_text_and_are_never_streamed(tiny, scheduler):
    model, tok = tiny
    probe = alone(model, [5, 9, 33], "a1", 12)
    text = tok.decode(probe, skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), text
    sched = scheduler()
    seq = Sequence([5, 9, 33], "a1", 12, RowSampler(0, 1, 0), frozenset(), stop=(stop,))
    pieces = list(sched.submit(seq).results())
    final = pieces[-1][1]
    assert final.finish_reason == "stop"
    assert final.text == text[: text.find(stop)]
    assert "".join(delta for delta, _ in pieces) == final.text


def test_closing_ends_every_request_with_cancelled(tiny):
    model, tok = tiny
    sched = BatchScheduler("tiny", model, tok)
    seq = sched.submit(greedy([5, 9], "a1", 10_000))
    next(seq.results())
    sched.close()
    with pytest.raises(Cancelled, match="unloaded"):
        finish(seq)


def test_dora_rows_decode_in_their_own_batch_beside_mixed_ones(tiny, scheduler):
    """PEFT cannot mix a DoRA adapter into a mixed-adapter forward; its rows
    run as a batch of their own and still match generating alone."""
    model, _ = tiny
    asks = [
        ([5, 9, 33, 12, 7], "d1", 10),
        ([40, 41, 42], "a1", 8),
        ([3, 4], "d1", 6),
        ([8] * 5, BASE_ADAPTER, 7),
    ]
    expected = [alone(model, *r) for r in asks]
    sched = scheduler(max_batch=8)
    seqs = [sched.submit(greedy(*r, solo=r[1] == "d1")) for r in asks]
    for seq in seqs:
        finish(seq)
    assert [s.generated for s in seqs] == expected


def test_the_lean_lora_path_matches_peft_and_generating_alone(
    tiny, scheduler, monkeypatch
):
    """With the adapters marked plain (as the engine does), mixed batches run
    through lora_rows instead of PEFT's adapter_names: same tokens as
    generating alone, DoRA rows beside them still in their own batch."""
    from services.inference import lora_rows

    model, _ = tiny
    asks = [*REQUESTS, ([5, 9, 33], "d1", 9)]
    expected = [alone(model, *r) for r in asks]
    assert lora_rows.install(model) > 0
    monkeypatch.setitem(model.__dict__, "lorafleet_plain", {"a1", "a2"})
    calls = []
    real_rows = lora_rows.rows

    def counting(names):
        calls.append(tuple(names))
        return real_rows(names)

    monkeypatch.setattr(lora_rows, "rows", counting)
    sched = scheduler(max_batch=8)
    seqs = [sched.submit(greedy(*r, solo=r[1] == "d1")) for r in asks]
    for seq in seqs:
        finish(seq)
    assert [s.generated for s in seqs] == expected
    assert calls and all("d1" not in names for names in calls)


@pytest.mark.parametrize(
    "names",
    [
        ["a1", "a2", "__base__", "a1", "a2"],  # mixed: gathered and scattered
        ["a2", "a2", "a2"],  # one adapter for every row: no gather
    ],
)
def test_lean_lora_logits_are_bit_identical_to_peft(tiny, names, monkeypatch):
    """Adapter by adapter on its own rows (the stacked path off)."""
    import torch

    from services.inference import lora_rows

    monkeypatch.setattr(lora_rows, "STACK_MIN_ADAPTERS", 99)
    model, _ = tiny
    lora_rows.install(model)
    torch.manual_seed(3)
    ids = torch.randint(4, 60, (len(names), 7))
    with torch.inference_mode():
        expected = model(input_ids=ids, adapter_names=names).logits
        with lora_rows.rows(names):
            lean = lora_rows.inner_model(model)(input_ids=ids).logits
        with lora_rows.rows(["__base__"] * len(names)):
            plain = lora_rows.inner_model(model)(input_ids=ids).logits
    assert torch.equal(lean, expected)
    # And the adapters matter (else equality would prove nothing).
    assert not torch.equal(lean[0], plain[0])


def test_stacked_lora_matches_peft_to_the_last_bits(tiny):
    """All adapters of a mixed batch in two products per layer: PEFT's
    logits within float rounding, the same greedy tokens; the stacks are
    rebuilt when an adapter's weights are replaced under the same name."""
    import torch

    from services.inference import lora_rows

    model, _ = tiny
    lora_rows.install(model)
    names = ["a1", "a2", "__base__", "a1", "a2"]
    torch.manual_seed(3)
    ids = torch.randint(4, 60, (len(names), 7))
    inner = lora_rows.inner_model(model)
    with torch.inference_mode():
        expected = model(input_ids=ids, adapter_names=names).logits
        with lora_rows.rows(names):
            stacked = inner(input_ids=ids).logits
        assert torch.allclose(stacked, expected, rtol=0, atol=1e-5)
        assert torch.equal(stacked.argmax(-1), expected.argmax(-1))
        layer = next(m for m in model.modules() if "_lorafleet_stacks" in m.__dict__)
        old = layer.lora_B["a2"].weight
        try:
            layer.lora_B["a2"].weight = torch.nn.Parameter(old * 3)
            changed = model(input_ids=ids, adapter_names=names).logits
            with lora_rows.rows(names):
                restacked = inner(input_ids=ids).logits
        finally:
            layer.lora_B["a2"].weight = old
    assert not torch.allclose(changed, expected, atol=1e-4)
    assert torch.allclose(restacked, changed, rtol=0, atol=1e-5)
