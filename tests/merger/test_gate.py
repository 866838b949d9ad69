"""The merge-correctness gate passes real merges and catches wrong ones."""

from __future__ import annotations

import pytest

from services.common.errors import FailedPrecondition
from services.merger.gate import check_merge, run_gate
from services.merger.lora_merge import merge_adapter
from tests.merger.helpers import make_adapter
from tests.merger.test_model_merge import perturbed


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gate") / "adapter"
    make_adapter(tiny_model_dir, out, seed=5, r=4, alpha=8)
    return out


def test_an_exact_lora_merge_passes(tiny_model_dir, adapter, tmp_path):
    merge_adapter(adapter, tiny_model_dir, tmp_path / "merged")
    report = check_merge(
        {
            "kind": "lora",
            "merged": str(tmp_path / "merged"),
            "base": str(tiny_model_dir),
            "adapter": str(adapter),
        }
    )
    assert report.passed and report.checks["relative_logit_diff"] < 1e-5
    assert report.checks["tokenizer_size"] <= report.checks["embedding_rows"]


def test_a_merge_that_lost_the_adapter_fails_with_numbers(tiny_model_dir, adapter):
    # The base itself posing as the merge: logits miss the adapter's delta.
    with pytest.raises(FailedPrecondition) as err:
        check_merge(
            {
                "kind": "lora",
                "merged": str(tiny_model_dir),
                "base": str(tiny_model_dir),
                "adapter": str(adapter),
            }
        )
    assert "merged logits differ from base+adapter" in err.value.message
    assert "max_abs_logit_diff" in err.value.message
    assert "nothing was registered" in err.value.message


def test_multi_model_perplexity_gate(tiny_model_dir, tmp_path):
    inputs = [
        perturbed(tiny_model_dir, tmp_path / f"in{i}", seed=i, scale=0.01)
        for i in (1, 2)
    ]
    fine = run_gate(
        {
            "kind": "models",
            "merged": str(inputs[0]),
            "inputs": [str(p) for p in inputs],
            "factor": 1.5,
        }
    )
    assert fine.passed
    wrecked = perturbed(tiny_model_dir, tmp_path / "wrecked", seed=9, scale=3.0)
    bad = run_gate(
        {
            "kind": "models",
            "merged": str(wrecked),
            "inputs": [str(p) for p in inputs],
            "factor": 1.5,
        }
    )
    assert not bad.passed
    assert bad.checks["merged_perplexity"] > 1.5 * max(bad.checks["input_perplexities"])
