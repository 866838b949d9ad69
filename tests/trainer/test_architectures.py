"""Ten model families train two steps with automatic target modules."""

from __future__ import annotations

import json
import math

import pytest
from safetensors import safe_open

from services.common.modeling import (
    TARGET_MODULES,
    adaptable_module_names,
    default_target_modules,
    load_causal_lm,
    model_type_of,
    unmatched_targets,
)
from services.trainer.spec import TrainConfig
from services.trainer.training import fine_tune
from tests.trainer.families import FAMILIES, build_family_model


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch-data") / "rows.jsonl"
    rows = [
        {"instruction": f"Order {i} socks for Ana", "output": f"{i} x socks"}
        for i in range(8)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_with_automatic_targets(
    family, tmp_path, tiny_tokenizer_dir, rows_file
):
    base = build_family_model(tmp_path / "base", tiny_tokenizer_dir, family)
    model_type = model_type_of(base)
    targets = default_target_modules(model_type)
    assert targets == TARGET_MODULES[family]  # the table covers the family
    real = [n for n, _ in load_causal_lm(base).named_modules()]
    assert unmatched_targets(targets, real) == []
    assert unmatched_targets(targets, adaptable_module_names(base)) == []

    cfg = TrainConfig(
        rank=2,
        max_steps=2,
        batch_size=4,
        max_seq_length=48,
        eval_fraction=0.0,
        learning_rate=1e-3,
    )
    out = tmp_path / "adapter"
    outcome = fine_tune(
        base,
        rows_file,
        out,
        cfg,
        device="cpu",
        on_progress=lambda *_: None,
        should_stop=lambda: False,
    )
    assert outcome.metrics["steps"] == 2
    assert math.isfinite(outcome.metrics["train_loss"])
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    for target in targets:  # every listed module really got a LoRA pair
        assert any(f".{target}.lora_A" in k for k in keys), (target, keys[:4])
