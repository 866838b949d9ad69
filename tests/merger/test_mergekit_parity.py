"""mergekit recipes give mergekit's numbers: the same YAML file, with folder
paths, runs through mergekit itself (0.1.5, in a venv of its own: `make
setup` builds .venv-mergekit) and through lorafleet's recipe translation and
merge executor; every tensor must agree to 1e-6.

Random sparsification (DARE, DELLA) cannot share mergekit's random stream,
so those methods are compared at density 1 here (their rescale and
normalize defaults) and statistically in test_merge_methods.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from services.merger import methods
from services.merger.model_merge import execute_model_merge, plan_model_merge
from services.merger.recipes import parse_recipe
from tests.tiny_models import build_tiny_model

ROOT = Path(__file__).resolve().parents[2]
MERGEKIT = (
    Path(os.environ.get("LORAFLEET_MERGEKIT_BIN", ROOT / ".venv-mergekit" / "bin"))
    / "mergekit-yaml"
)


def _variant(base: Path, out: Path, seed: int, scale: float) -> Path:
    """`base` plus Gaussian noise on every floating tensor: a 'fine-tune'."""
    shutil.copytree(base, out)
    gen = torch.Generator().manual_seed(seed)
    for file in out.glob("*.safetensors"):
        tensors = load_file(str(file))
        noisy = {
            k: (v + scale * torch.randn(v.shape, generator=gen)).contiguous()
            if v.is_floating_point()
            else v
            for k, v in tensors.items()
        }
        save_file(noisy, str(file), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("mergekit-zoo")
    base = build_tiny_model(root / "base", tiny_tokenizer_dir)
    return {
        "base": base,
        "a": _variant(base, root / "a", 1, 0.02),
        "b": _variant(base, root / "b", 2, 0.03),
        "c": _variant(base, root / "c", 3, 0.01),
    }


def run_mergekit(recipe: Path, out: Path) -> dict[str, torch.Tensor]:
    assert MERGEKIT.exists(), (
        f"{MERGEKIT} is missing: `make setup` installs mergekit 0.1.5 into "
        ".venv-mergekit (or point LORAFLEET_MERGEKIT_BIN at a bin folder with "
        "mergekit-yaml)"
    )
    done = subprocess.run(
        [
            str(MERGEKIT),
            str(recipe),
            str(out),
            "--no-cuda",
            "--no-copy-tokenizer",
            "--quiet",
            "--no-write-model-card",
            "--allow-crimes",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    merged: dict[str, torch.Tensor] = {}
    for file in sorted(out.glob("*.safetensors")):
        merged.update(load_file(str(file)))
    return merged


def run_lorafleet(recipe_text: str, out: Path) -> dict[str, torch.Tensor]:
    recipe = parse_recipe(recipe_text)
    base, inputs = recipe.inputs()
    method = methods.get(recipe.method)
    params = methods.parse_params(method, recipe.params, len(inputs))
    plan = plan_model_merge(
        method, params, Path(base) if base else None, [Path(m) for m in inputs]
    )
    execute_model_merge(plan, out)
    merged: dict[str, torch.Tensor] = {}
    for file in sorted(out.glob("*.safetensors")):
        merged.update(load_file(str(file)))
    return merged


def models(zoo, *specs) -> list[dict]:
    return [
        {"model": str(zoo[name]), **({"parameters": p} if p else {})}
        for name, p in specs
    ]


CASES = {
    "linear": lambda z: {
        "merge_method": "linear",
        "models": models(z, ("a", {"weight": 0.3}), ("b", {"weight": 0.7})),
    },
    "linear_unnormalized": lambda z: {
        "merge_method": "linear",
        "models": models(z, ("a", {"weight": 0.5}), ("b", {"weight": 0.25})),
        "parameters": {"normalize": False},
    },
    "linear_gradient_and_filter": lambda z: {
        "merge_method": "linear",
        "models": models(
            z,
            ("a", {"weight": [1.0, 0.2]}),
            ("b", {"weight": [{"filter": "mlp", "value": [0.1, 0.9]}, {"value": 0.5}]}),
        ),
    },
    "task_arithmetic": lambda z: {
        "merge_method": "task_arithmetic",
        "base_model": str(z["base"]),
        "models": models(z, ("a", {"weight": 0.5}), ("b", {"weight": 1.0})),
        "parameters": {"lambda": 0.8},
    },
    "ties_0.5": lambda z: {
        "merge_method": "ties",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 1.0, "density": 0.5}),
            ("b", {"weight": 0.6, "density": 0.5}),
        ),
    },
    "ties_0.3_trim_count": lambda z: {
        "merge_method": "ties",
        "base_model": str(z["base"]),
        "models": models(
            z, ("a", {"weight": 1.0}), ("b", {"weight": 1.0}), ("c", {"weight": 0.5})
        ),
        "parameters": {"density": 0.3},
    },
    "ties_per_model_unnormalized": lambda z: {
        "merge_method": "ties",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 0.7, "density": 0.3}),
            ("b", {"weight": 0.4, "density": 0.7}),
        ),
        "parameters": {"normalize": False, "int8_mask": True},
    },
    "ties_gradient_and_filter": lambda z: {
        "merge_method": "ties",
        "base_model": str(z["base"]),
        "models": models(
            z,
            (
                "a",
                {
                    "weight": [0.0, 0.5, 1.0],
                    "density": [{"filter": "self_attn", "value": 0.4}, {"value": 0.8}],
                },
            ),
            ("b", {"weight": [1.0, 0.2], "density": 0.6}),
        ),
        "parameters": {"lambda": [{"filter": "mlp", "value": 1.3}, {"value": 0.9}]},
    },
    "ties_rescaled": lambda z: {
        "merge_method": "ties",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 1.0, "density": 0.4}),
            ("b", {"weight": 1.0, "density": 0.4}),
        ),
        "parameters": {"rescale": True},
    },
    "dare_ties_density_1": lambda z: {
        "merge_method": "dare_ties",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 0.6, "density": 1.0}),
            ("b", {"weight": 0.9, "density": 1.0}),
        ),
    },
    "dare_ties_normalized": lambda z: {
        "merge_method": "dare_ties",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 0.6, "density": 1.0}),
            ("b", {"weight": 0.9, "density": 1.0}),
        ),
        "parameters": {"normalize": True},
    },
    "dare_linear_density_1": lambda z: {
        "merge_method": "dare_linear",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 0.5, "density": 1.0}),
            ("c", {"weight": 0.5, "density": 1.0}),
        ),
    },
    "breadcrumbs": lambda z: {
        "merge_method": "breadcrumbs",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 1.0, "density": 0.8, "gamma": 0.05}),
            ("b", {"weight": 0.5, "density": 0.7, "gamma": 0.02}),
        ),
    },
    "breadcrumbs_ties": lambda z: {
        "merge_method": "breadcrumbs_ties",
        "base_model": str(z["base"]),
        "models": models(
            z,
            ("a", {"weight": 1.0, "density": 0.8}),
            ("b", {"weight": 0.5, "density": 0.9}),
        ),
        "parameters": {"gamma": 0.03},
    },
    "model_stock": lambda z: {
        "merge_method": "model_stock",
        "base_model": str(z["base"]),
        "models": models(z, ("a", None), ("b", None), ("c", None)),
    },
    "model_stock_filter_wise": lambda z: {
        "merge_method": "model_stock",
        "base_model": str(z["base"]),
        "models": models(z, ("a", None), ("b", None)),
        "parameters": {"filter_wise": True},
    },
    "sce": lambda z: {
        "merge_method": "sce",
        "base_model": str(z["base"]),
        "models": models(z, ("a", None), ("b", None), ("c", None)),
        "parameters": {"select_topk": 0.5},
    },
    "karcher": lambda z: {
        "merge_method": "karcher",
        "models": models(z, ("a", None), ("b", None), ("c", None)),
    },
    "multislerp": lambda z: {
        "merge_method": "multislerp",
        "models": models(
            z, ("a", {"weight": 0.5}), ("b", {"weight": 0.3}), ("c", {"weight": 0.2})
        ),
    },
    "multislerp_around_base": lambda z: {
        "merge_method": "multislerp",
        "base_model": str(z["base"]),
        "models": models(z, ("a", {"weight": 1.0}), ("b", {"weight": 2.0})),
        "parameters": {"normalize_weights": True},
    },
    "nuslerp": lambda z: {
        "merge_method": "nuslerp",
        "models": models(z, ("a", {"weight": 0.3}), ("b", {"weight": 0.7})),
    },
    "nuslerp_row_wise_around_base": lambda z: {
        "merge_method": "nuslerp",
        "base_model": str(z["base"]),
        "models": models(z, ("a", {"weight": 1.0}), ("c", {"weight": 3.0})),
        "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True},
    },
    "nuslerp_column_wise": lambda z: {
        "merge_method": "nuslerp",
        "models": models(z, ("b", {"weight": 2.0}), ("c", {"weight": 1.0})),
        "parameters": {"nuslerp_flatten": False},
    },
    "slerp": lambda z: {
        "merge_method": "slerp",
        "base_model": str(z["a"]),
        "models": models(z, ("a", None), ("b", None)),
        "parameters": {"t": 0.3},
    },
    "slerp_gradient_and_filter": lambda z: {
        "merge_method": "slerp",
        "base_model": str(z["b"]),
        "models": models(z, ("a", None), ("b", None)),
        "parameters": {
            "t": [
                {"filter": "self_attn", "value": [0.0, 0.5, 1.0]},
                {"filter": "mlp", "value": [1.0, 0.5, 0.0]},
                {"value": 0.5},
            ]
        },
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_recipe_gives_mergekits_numbers(zoo, tmp_path, case):
    recipe = {**CASES[case](zoo), "dtype": "float32"}
    path = tmp_path / "recipe.yml"
    text = yaml.safe_dump(recipe, sort_keys=False)
    path.write_text(text)
    theirs = run_mergekit(path, tmp_path / "mergekit")
    ours = run_lorafleet(text, tmp_path / "lorafleet")
    assert set(theirs) <= set(ours)
    worst = max(
        (float((ours[name].float() - t.float()).abs().max()), name)
        for name, t in theirs.items()
    )
    assert worst[0] <= 1e-6, f"{case}: {worst[1]} differs by {worst[0]:.3g}"
    # and the merge did something: it is not just the base or one input
    first = load_file(
        str(next(Path(recipe["models"][0]["model"]).glob("*.safetensors")))
    )
    assert any(not torch.equal(ours[k], first[k]) for k in first if k in ours)
