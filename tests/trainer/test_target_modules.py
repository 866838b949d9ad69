"""Target-module checks at Start: PEFT's matching rules, on a meta-device model."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.common.modeling import (
    adaptable_module_names,
    check_target_modules,
    leaf_names,
    load_causal_lm,
    unmatched_targets,
)

NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "lm_head"]


def test_matching_is_exact_or_dotted_suffix():
    assert unmatched_targets(["q_proj", "mlp.up_proj", "lm_head"], NAMES) == []
    assert unmatched_targets(["proj", "attn.q", "up_proj"], NAMES) == ["proj", "attn.q"]


def test_error_lists_the_leaf_names_that_exist():
    with pytest.raises(InvalidArgument) as err:
        check_target_modules(["query_key_value"], NAMES)
    assert err.value.field == "config.target_modules"
    assert "['query_key_value']" in err.value.message
    assert "['q_proj', 'up_proj', 'lm_head']" in err.value.message


def test_meta_listing_matches_the_loaded_model(tiny_model_dir):
    import torch
    from transformers.pytorch_utils import Conv1D

    real = [
        n
        for n, m in load_causal_lm(tiny_model_dir).named_modules()
        if isinstance(m, (torch.nn.Linear, Conv1D))
    ]
    assert adaptable_module_names(tiny_model_dir) == real
    assert "q_proj" in leaf_names(real)
