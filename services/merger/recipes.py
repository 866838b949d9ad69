"""mergekit YAML recipes as lorafleet merges: what maps, and what is refused.

A recipe names a `merge_method`, an optional `base_model`, `models` each with
its own `parameters`, recipe-wide `parameters` and a `dtype`. They map onto a
merge request: the models in order, per-model settings as lists (`weight` →
`weights`, `density` → `densities`, ...), recipe-wide settings as they are
(`lambda` is `scale`). Everything in a recipe that would not be honoured is
INVALID_ARGUMENT naming it, never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from services.common.errors import InvalidArgument, shorten

# Per-model parameters of the task-vector family and their list names.
PER_MODEL = {
    "weight": "weights",
    "density": "densities",
    "gamma": "gammas",
    "epsilon": "epsilons",
}
DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
TOP_LEVEL = {"merge_method", "base_model", "models", "parameters", "dtype"}
NOT_YET = {
    "slices": "layer stacking (slices) is not supported yet",
    "tokenizer_source": "tokenizer_source is not supported yet",
    "tokenizer": "tokenizer settings are not supported yet",
    "chat_template": "chat_template is not supported yet",
    "out_dtype": "out_dtype is not supported yet; use dtype",
    "modules": "modules are not supported",
}


@dataclass
class Recipe:
    """A recipe as a merge request: method, base, inputs (refs or folders), params."""

    method: str
    base_model: str = ""
    models: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str = ""

    def inputs(self) -> tuple[str, list[str]]:
        """(base, inputs) of the merge. mergekit's slerp takes its base_model
        as the t = 0 end and the other model as t = 1; lorafleet's slerp has
        no base and takes them in that order."""
        if self.method == "slerp" and self.base_model:
            others = [m for m in self.models if m != self.base_model]
            return "", [self.base_model, *others]
        return self.base_model, list(self.models)


def _model_ref(entry: Any, where: str) -> str:
    if isinstance(entry, str) and entry.strip():
        return entry.strip()
    raise InvalidArgument(
        f"{where} must name a model (a registry ref or a model folder), got "
        f"{shorten(entry)}",
        field="recipe",
    )


def parse_recipe(text: str) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidArgument(
            f"the recipe is not valid YAML: {exc}", field="recipe"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgument("a recipe is a YAML mapping", field="recipe")
    for key in data:
        if key in NOT_YET:
            raise InvalidArgument(f"recipe key {key!r}: {NOT_YET[key]}", field="recipe")
        if key not in TOP_LEVEL:
            raise InvalidArgument(
                f"recipe key {shorten(key)!r} is unknown; lorafleet reads "
                f"{', '.join(sorted(TOP_LEVEL))}",
                field="recipe",
            )
    method = data.get("merge_method")
    if not isinstance(method, str) or not method:
        raise InvalidArgument("the recipe needs merge_method", field="recipe")
    recipe = Recipe(method=method)
    if data.get("base_model") is not None:
        recipe.base_model = _model_ref(data["base_model"], "base_model")
    dtype = data.get("dtype")
    if dtype is not None:
        if dtype not in DTYPES:
            raise InvalidArgument(
                f"dtype {shorten(dtype)!r} is not one of {', '.join(DTYPES)}",
                field="recipe",
            )
        recipe.dtype = DTYPES[dtype]
    shared = data.get("parameters") or {}
    if not isinstance(shared, dict):
        raise InvalidArgument("recipe parameters must be a mapping", field="recipe")
    entries = data.get("models") or []
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("the recipe needs models (a list)", field="recipe")
    per_model: dict[str, list[Any]] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise InvalidArgument(
                f"models[{i}] must be {{model: ..., parameters: ...}}", field="recipe"
            )
        unknown = sorted(set(entry) - {"model", "parameters"})
        if unknown:
            raise InvalidArgument(
                f"models[{i}] has unknown key {unknown[0]!r}", field="recipe"
            )
        model = _model_ref(entry["model"], f"models[{i}].model")
        params = entry.get("parameters") or {}
        if model == recipe.base_model and recipe.method != "slerp":
            # mergekit lists the base among the models at times; it is the base.
            continue
        recipe.models.append(model)
        for key, value in params.items():
            if key not in PER_MODEL and key != "t":
                raise InvalidArgument(
                    f"models[{i}].parameters.{shorten(key)} is not a per-model "
                    f"parameter lorafleet knows ({', '.join(PER_MODEL)})",
                    field="recipe",
                )
            per_model.setdefault(key, []).append((len(recipe.models) - 1, value))
    n = len(recipe.models)
    for key, values in per_model.items():
        plural = PER_MODEL.get(key, key)
        default = shared.get(key, 1.0 if key == "weight" else None)
        filled: list[Any] = [default] * n
        for index, value in values:
            filled[index] = value
        if any(v is None for v in filled):
            missing = filled.index(None)
            raise InvalidArgument(
                f"models[{missing}] has no {key} and the recipe sets none in "
                "parameters; give every model one",
                field="recipe",
            )
        recipe.params[plural] = filled
    for key, value in shared.items():
        if key in PER_MODEL:
            if PER_MODEL[key] not in recipe.params:
                recipe.params[key if key != "weight" else "weights"] = (
                    value if key != "weight" else [value] * n
                )
        else:
            # The method's own parameters (normalize, lambda, t, select_topk,
            # filter_wise, ...): the method refuses, by name, any it lacks.
            recipe.params[key] = value
    return recipe
