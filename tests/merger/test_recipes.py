"""Recipe parsing, without a server: slices become per-slice merges in
lorafleet's parameter names, and what would be ignored is refused by name."""

from __future__ import annotations

import pytest
import yaml

from services.common.errors import InvalidArgument
from services.merger.recipes import parse_recipe


def recipe(**data) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def src(model: str, first: int, end: int, **params) -> dict:
    entry = {"model": model, "layer_range": [first, end]}
    return {**entry, "parameters": params} if params else entry


def test_slices_take_the_base_out_and_fill_per_model_lists_per_slice():
    parsed = parse_recipe(
        recipe(
            merge_method="ties",
            base_model="base",
            parameters={"density": 0.5, "normalize": False},
            slices=[
                {
                    "sources": [
                        src("a", 0, 4, weight=0.3),
                        src("base", 0, 4),
                        src("b", 2, 6, density=0.9),
                    ],
                    "parameters": {"weight": 0.7},
                }
            ],
        )
    )
    (only,) = parsed.slices
    assert only["base"] == {"model": "base", "layer_range": [0, 4]}
    assert [s["model"] for s in only["inputs"]] == ["a", "b"]
    assert only["params"]["weights"] == [0.3, 0.7]  # source, then slice
    assert only["params"]["densities"] == [0.5, 0.9]  # recipe-wide, then source
    assert only["params"]["normalize"] is False
    assert parsed.inputs() == ("base", ["a", "b"])


def test_slerp_slices_put_the_base_first_as_the_t0_end():
    parsed = parse_recipe(
        recipe(
            merge_method="slerp",
            base_model="b",
            parameters={"t": 0.3},
            slices=[{"sources": [src("a", 0, 2), src("b", 0, 2)]}],
        )
    )
    assert [s["model"] for s in parsed.slices[0]["inputs"]] == ["b", "a"]
    assert parsed.slices[0]["base"] is None
    assert parsed.inputs() == ("", ["b", "a"])


def test_passthrough_takes_a_sources_scale_as_its_own():
    parsed = parse_recipe(
        recipe(
            merge_method="passthrough",
            slices=[{"sources": [src("a", 0, 2, scale=0.5)]}],
        )
    )
    assert parsed.slices[0]["params"] == {"scale": 0.5}


@pytest.mark.parametrize(
    "data, words",
    [
        (
            {
                "merge_method": "ties",
                "base_model": "base",
                "slices": [{"sources": [src("a", 0, 2), src("b", 0, 2)]}],
            },
            "slices[0] does not list base_model base",
        ),
        (
            {
                "merge_method": "linear",
                "slices": [{"sources": [src("a", 0, 2)]}],
                "models": [{"model": "a"}],
            },
            "exactly one of them",
        ),
        (
            {
                "merge_method": "passthrough",
                "slices": [{"sources": [{"model": "a", "layer_range": [0]}]}],
            },
            "layer_range must be [first, end]",
        ),
        (
            {
                "merge_method": "passthrough",
                "slices": [{"sources": [src("a", 0, 2)], "residual_weight": 0.1}],
            },
            "residual_weight is not supported",
        ),
        (
            {
                "merge_method": "slerp",
                "models": [{"model": "a", "parameters": {"t": 0.2}}, {"model": "b"}],
            },
            "models[0].parameters.t is not a per-model parameter",
        ),
        (
            {
                "merge_method": "linear",
                "models": [{"model": "a"}],
                "tokenizer_source": "base",
            },
            "tokenizer_source: base needs base_model",
        ),
        (
            {
                "merge_method": "linear",
                "models": [{"model": "a"}],
                "chat_template": "{{ x }}",
            },
            "neither auto, a known template",
        ),
    ],
)
def test_what_would_be_ignored_is_refused_by_name(data, words):
    with pytest.raises(InvalidArgument) as err:
        parse_recipe(recipe(**data))
    assert words in err.value.message


def test_tokenizer_source_base_names_the_base_and_templates_pass_through():
    parsed = parse_recipe(
        recipe(
            merge_method="task_arithmetic",
            base_model="base",
            models=[{"model": "a"}],
            tokenizer_source="base",
            chat_template="chatml",
        )
    )
    assert parsed.tokenizer_source == "base"
    assert parsed.chat_template == "chatml"
    assert parsed.referenced() == ["base", "a"]


def test_the_cli_makes_slice_and_tokenizer_folders_absolute(tmp_path):
    """`lorafleet merge` runs where the recipe's relative folders resolve; the
    merger runs elsewhere, so every folder the recipe names goes absolute."""
    from services.cli.merge import _absolute

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    fixed = _absolute(
        {
            "merge_method": "passthrough",
            "slices": [
                {"sources": [{"model": "./a", "layer_range": [0, 1]}]},
                {"sources": [{"model": "b", "layer_range": [0, 1]}]},
            ],
            "tokenizer_source": "./b",
        },
        tmp_path,
    )
    assert [s["sources"][0]["model"] for s in fixed["slices"]] == [
        str((tmp_path / "a").resolve()),
        str((tmp_path / "b").resolve()),
    ]
    assert fixed["tokenizer_source"] == str((tmp_path / "b").resolve())
    assert _absolute({"tokenizer_source": "base"}, tmp_path) == {
        "tokenizer_source": "base"
    }
