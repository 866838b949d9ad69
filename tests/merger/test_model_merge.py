"""Whole-model merges streamed from safetensors equal the method applied in memory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from services.common.errors import FailedPrecondition
from services.merger import methods
from services.merger.methods import TensorContext, parse_params
from services.merger.model_merge import execute_model_merge, plan_model_merge


def perturbed(src: Path, dst: Path, seed: int, scale: float = 0.05) -> Path:
    """A copy of `src` whose float weights moved by seeded noise: a 'fine-tune'."""
    shutil.copytree(src, dst)
    weights = load_file(str(src / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    moved = {
        k: v + scale * torch.randn(v.shape, generator=gen)
        if v.is_floating_point()
        else v
        for k, v in weights.items()
    }
    save_file(moved, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def finetunes(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetunes")
    return [perturbed(tiny_model_dir, root / f"ft{i}", seed=i) for i in (1, 2)]


@pytest.mark.parametrize(
    "name, raw, with_base",
    [
        ("linear", {"weights": [1.0, 3.0]}, False),
        ("task_arithmetic", {"scale": 0.7}, True),
        ("ties", {"density": 0.3}, True),
        ("dare_ties", {"density": 0.5, "seed": 11}, True),
        ("slerp", {"t": 0.3, "t_by_layer": [0.0, 1.0]}, False),
        ("magnitude_prune", {"density": 0.2}, True),
    ],
)
def test_streamed_merge_equals_the_method_on_loaded_tensors(
    name, raw, with_base, tiny_model_dir, finetunes, tmp_path
):
    method = methods.get(name)
    params = parse_params(method, raw, len(finetunes))
    base_dir = tiny_model_dir if with_base else None
    plan = plan_model_merge(method, params, base_dir, finetunes)
    stats = execute_model_merge(plan, tmp_path / "out")
    out = load_file(str(tmp_path / "out" / "model.safetensors"))
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    inputs = [load_file(str(d / "model.safetensors")) for d in finetunes]
    assert set(out) == set(base) and stats.tensors_total == len(base)
    for key in base:
        expected = method.merge(
            base[key] if with_base else None,
            [m[key] for m in inputs],
            params,
            TensorContext(key, num_layers=2),
        )
        assert torch.allclose(out[key], expected, atol=1e-6), key
    assert (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_merged_model_loads_and_generates(tiny_model_dir, finetunes, tmp_path):
    from transformers import AutoModelForCausalLM

    method = methods.get("ties")
    plan = plan_model_merge(
        method, parse_params(method, {"density": 0.5}, 2), tiny_model_dir, finetunes
    )
    execute_model_merge(plan, tmp_path / "out", output_dtype="bfloat16")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
    assert model.dtype == torch.bfloat16
    out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


def test_models_of_different_architectures_are_refused(
    tiny_model_dir, tiny_model_factory
):
    method = methods.get("linear")
    with pytest.raises(FailedPrecondition, match="lacks tensor"):
        plan_model_merge(
            method,
            parse_params(method, {}, 2),
            None,
            [tiny_model_dir, tiny_model_factory("gpt2")],
        )
