"""mergekit recipes give mergekit's numbers: the same YAML file, with folder
paths, runs through mergekit itself (0.1.5, in a venv of its own: `make
setup` builds .venv-mergekit) and through lorafleet's recipe translation and
merge executor; every tensor must agree to 1e-6.

Random sparsification (DARE, DELLA) cannot share mergekit's random stream,
so those methods are compared at density 1 here (their rescale and
normalize defaults) and statistically in test_merge_methods.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from services.common.errors import FailedPrecondition
from services.merger.model_jobs import plan_for
from services.merger.model_merge import execute_model_merge
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


def run_mergekit(
    recipe: Path, out: Path, copy_tokenizer: bool = False
) -> dict[str, torch.Tensor]:
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
            *([] if copy_tokenizer else ["--no-copy-tokenizer"]),
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


def _artifact(folder: str) -> SimpleNamespace:
    """A folder standing in for its registry artifact (id = the folder)."""
    return SimpleNamespace(id=folder, local_path=folder)


def run_lorafleet(recipe_text: str, out: Path) -> dict[str, torch.Tensor]:
    """The recipe as the merger runs it: parsed, planned (plan_for, as at
    Start and on a re-run from the queue) and executed."""
    recipe = parse_recipe(recipe_text)
    base, inputs = recipe.inputs()
    request = SimpleNamespace(
        method=recipe.method,
        params=recipe.params,
        input_model_ids=inputs,
        slices=tuple(recipe.slices),
        chat_template=recipe.chat_template,
    )
    plan = plan_for(
        request,
        _artifact(base) if base else None,
        [_artifact(m) for m in inputs],
        _artifact(recipe.tokenizer_source) if recipe.tokenizer_source else None,
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
    "sce_gradient_topk": lambda z: {
        "merge_method": "sce",
        "base_model": str(z["base"]),
        "models": models(z, ("a", None), ("b", None), ("c", None)),
        "parameters": {
            "select_topk": [{"filter": "mlp", "value": [0.2, 0.9]}, {"value": 0.5}]
        },
    },
    "multislerp_gradient_and_filter": lambda z: {
        "merge_method": "multislerp",
        "models": models(
            z,
            ("a", {"weight": [0.2, 1.0]}),
            ("b", {"weight": 0.5}),
            ("c", {"weight": [{"filter": "mlp", "value": 0.3}, {"value": 1.0}]}),
        ),
    },
    "nuslerp_gradient": lambda z: {
        "merge_method": "nuslerp",
        "models": models(
            z, ("a", {"weight": [1.0, 0.2]}), ("b", {"weight": [0.1, 1.0]})
        ),
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


def source(zoo, name: str, first: int, end: int, params: dict | None = None) -> dict:
    entry = {"model": str(zoo[name]), "layer_range": [first, end]}
    return {**entry, "parameters": params} if params else entry


# Layer stacks (the tiny models have 2 layers each).
SLICE_CASES = {
    "passthrough_stack": lambda z: {
        "merge_method": "passthrough",
        "slices": [
            {"sources": [source(z, "a", 0, 2)]},
            {
                "sources": [
                    source(
                        z,
                        "b",
                        0,
                        1,
                        {"scale": [{"filter": "o_proj", "value": 0.5}, {"value": 1.0}]},
                    )
                ]
            },
            {"sources": [source(z, "c", 1, 2)]},
        ],
    },
    "slerp_slices_gradient": lambda z: {
        "merge_method": "slerp",
        "base_model": str(z["b"]),
        "slices": [
            {"sources": [source(z, "a", 0, 2), source(z, "b", 0, 2)]},
        ],
        "parameters": {
            "t": [{"filter": "self_attn", "value": [0.0, 1.0]}, {"value": 0.3}]
        },
    },
    "ties_two_slices": lambda z: {
        "merge_method": "ties",
        "base_model": str(z["base"]),
        "slices": [
            {
                "sources": [
                    source(z, "base", 0, 1),
                    source(z, "a", 0, 1, {"density": 0.5, "weight": [0.2, 1.0]}),
                    source(z, "b", 1, 2, {"density": 0.7, "weight": 0.5}),
                ]
            },
            {
                "sources": [
                    source(z, "base", 0, 2),
                    source(z, "a", 0, 2, {"density": 0.4}),
                    source(z, "c", 0, 2, {"density": 0.9}),
                ],
                "parameters": {"weight": [1.0, 0.3]},
            },
        ],
    },
    "linear_crossed_layers": lambda z: {
        "merge_method": "linear",
        "slices": [
            {"sources": [source(z, "a", 0, 1), source(z, "b", 1, 2)]},
            {
                "sources": [source(z, "a", 1, 2), source(z, "b", 0, 1)],
                "parameters": {"weight": 0.5},
            },
        ],
        "parameters": {"weight": [0.25, 0.75]},
    },
}


@pytest.mark.parametrize("case", sorted(SLICE_CASES))
def test_a_layer_stack_gives_mergekits_model(zoo, tmp_path, case):
    recipe = {**SLICE_CASES[case](zoo), "dtype": "float32"}
    path = tmp_path / "recipe.yml"
    text = yaml.safe_dump(recipe, sort_keys=False)
    path.write_text(text)
    theirs = run_mergekit(path, tmp_path / "mergekit")
    ours = run_lorafleet(text, tmp_path / "lorafleet")
    assert set(theirs) == set(ours)
    worst = max(
        (float((ours[name].float() - t.float()).abs().max()), name)
        for name, t in theirs.items()
    )
    assert worst[0] <= 1e-6, f"{case}: {worst[1]} differs by {worst[0]:.3g}"
    config = {
        side: json.loads((tmp_path / side / "config.json").read_text())
        for side in ("mergekit", "lorafleet")
    }
    layers = sum(
        s["sources"][0]["layer_range"][1] - s["sources"][0]["layer_range"][0]
        for s in recipe["slices"]
    )
    assert config["lorafleet"]["num_hidden_layers"] == layers
    assert config["mergekit"]["num_hidden_layers"] == layers


def test_tokenizer_source_and_chat_template_as_mergekit_writes_them(zoo, tmp_path):
    """The output's tokenizer comes from tokenizer_source and renders the named
    chat template the way mergekit's output does."""
    from transformers import AutoTokenizer

    recipe = {
        "merge_method": "linear",
        "models": models(zoo, ("a", {"weight": 1.0}), ("b", {"weight": 1.0})),
        "tokenizer_source": str(zoo["b"]),
        "chat_template": "llama3",
        "dtype": "float32",
    }
    path = tmp_path / "recipe.yml"
    text = yaml.safe_dump(recipe, sort_keys=False)
    path.write_text(text)
    theirs = run_mergekit(path, tmp_path / "mergekit", copy_tokenizer=True)
    ours = run_lorafleet(text, tmp_path / "lorafleet")
    assert set(theirs) == set(ours)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)
    chat = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Ship 2 mugs to Leeds"},
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": "And 3 more?"},
    ]
    rendered = {
        side: AutoTokenizer.from_pretrained(str(tmp_path / side)).apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True
        )
        for side in ("mergekit", "lorafleet")
    }
    assert rendered["lorafleet"] == rendered["mergekit"]
    assert "<|start_header_id|>assistant<|end_header_id|>" in rendered["lorafleet"]


def test_a_tokenizer_source_with_another_vocabulary_is_refused(zoo, tmp_path):
    """lorafleet does not re-index embeddings: a tokenizer whose token ids
    differ from the models' is refused before anything is merged."""
    other = shutil.copytree(zoo["b"], tmp_path / "other-vocab")
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    first, second = list(vocab)[:2]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(data))
    text = yaml.safe_dump(
        {
            "merge_method": "linear",
            "models": models(zoo, ("a", {"weight": 1.0}), ("c", {"weight": 1.0})),
            "tokenizer_source": str(other),
        }
    )
    with pytest.raises(FailedPrecondition, match="vocabulary differs"):
        run_lorafleet(text, tmp_path / "out")
    assert not (tmp_path / "out").exists()
