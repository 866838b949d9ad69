"""The speed gate's timing: models take turns on the same workload, the first
one rotating, and each keeps its median round, so load that comes and goes
on the machine does not decide the ratio."""

from __future__ import annotations

import pytest

from services.validator import evaluation


def test_models_are_timed_in_turn_and_keep_their_median(monkeypatch):
    order: list[str] = []
    # A burst of load during the first two timings (whoever they are) only.
    slow = iter([10.0, 10.0] + [1.0] * 4)

    def fake_generate(model, tokenizer, prompts, **kw):
        assert kw["fixed_length"] and kw["batch_size"] == 1
        order.append(model)
        return [], next(slow) * len(prompts) * evaluation.LATENCY_TOKENS / 1000.0

    monkeypatch.setattr(evaluation, "generate_batch", fake_generate)
    ms = evaluation.time_alternately(
        [("candidate", None, ["p"]), ("baseline", None, ["p", "q"])], rounds=3
    )
    assert order == ["candidate", "baseline", "baseline", "candidate"] + [
        "candidate",
        "baseline",
    ]
    # Each saw the burst once; the medians agree: ratio 1.0, not 10.
    assert ms == pytest.approx([1.0, 1.0])
