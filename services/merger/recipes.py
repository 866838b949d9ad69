"""mergekit YAML recipes as lorafleet merges: what maps, and what is refused.

A recipe names a `merge_method`, an optional `base_model`, `models` each with
its own `parameters` (or `slices` of `sources` with layer ranges), recipe-wide
`parameters`, a `dtype`, a `tokenizer_source` and a `chat_template`. They map
onto a merge request: the models in order, per-model settings as lists
(`weight` → `weights`, `density` → `densities`, ...), recipe-wide settings as
they are (`lambda` is `scale`); each slice gets its own parameters the same
way (source, then slice, then recipe, as mergekit resolves them). Everything
in a recipe that would not be honoured is INVALID_ARGUMENT naming it, never
silently dropped.
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
TOP_LEVEL = {
    "merge_method",
    "base_model",
    "models",
    "slices",
    "parameters",
    "dtype",
    "tokenizer_source",
    "chat_template",
}
NOT_YET = {
    "tokenizer": "tokenizer settings (added tokens, pad_to_multiple_of) are not "
    "supported; use tokenizer_source: base or a model",
    "out_dtype": "out_dtype is not supported yet; use dtype",
    "modules": "modules are not supported (use models or slices)",
}
SLICE_KEYS = {"sources", "parameters"}
SLICE_NOT_YET = {
    "base_model": "a base model per slice is not supported; set base_model for "
    "the whole recipe",
    "residual_weight": "residual_weight is not supported",
}
# Chat templates a recipe may name (services/merger/chat_templates/NAME.jinja).
CHAT_TEMPLATE_NAMES = ("alpaca", "chatml", "exaone", "llama3", "mistral")


@dataclass
class Recipe:
    """A recipe as a merge request: method, base, inputs (refs or folders), params.

    With `slices`, each slice is {"base": source | None, "inputs": [source],
    "params": {...}} where a source is {"model": ref, "layer_range": [a, b]}
    and params are the slice's own (recipe-wide, then slice-wide, then each
    source's per-model values), already in lorafleet's names.
    """

    method: str
    base_model: str = ""
    models: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str = ""
    slices: list[dict[str, Any]] = field(default_factory=list)
    # "base" or a model ref: the output's tokenizer comes from that model.
    tokenizer_source: str = ""
    # "auto", one of CHAT_TEMPLATE_NAMES or Jinja text.
    chat_template: str = ""

    def inputs(self) -> tuple[str, list[str]]:
        """(base, inputs) of the merge. mergekit's slerp takes its base_model
        as the t = 0 end and the other model as t = 1; lorafleet's slerp has
        no base and takes them in that order."""
        if self.slices:
            models: list[str] = []
            for s in self.slices:
                for src in s["inputs"]:
                    if src["model"] not in models:
                        models.append(src["model"])
            base = next((s["base"]["model"] for s in self.slices if s["base"]), "")
            return base, models
        if self.method == "slerp" and self.base_model:
            others = [m for m in self.models if m != self.base_model]
            return "", [self.base_model, *others]
        return self.base_model, list(self.models)

    def referenced(self) -> list[str]:
        """Every model the recipe names, base first, without repeats."""
        base, models = self.inputs()
        named = [self.base_model, base, *models]
        return [m for i, m in enumerate(named) if m and m not in named[:i]]


def _model_ref(entry: Any, where: str) -> str:
    if isinstance(entry, str) and entry.strip():
        return entry.strip()
    raise InvalidArgument(
        f"{where} must name a model (a registry ref or a model folder), got "
        f"{shorten(entry)}",
        field="recipe",
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a mapping", field="recipe")
    return value


def _per_model_params(
    method: str,
    shared: dict[str, Any],
    per_model: list[dict[str, Any]],
    where: list[str],
) -> dict[str, Any]:
    """One merge's parameters: `shared` (recipe-wide, then slice-wide) with
    every per-model value turned into lorafleet's one-per-input lists."""
    params: dict[str, Any] = {}
    allowed = dict(PER_MODEL)
    if method == "passthrough":
        allowed["scale"] = "scale"  # one input: its scale is the merge's
    lists: dict[str, list[tuple[int, Any]]] = {}
    for i, own in enumerate(per_model):
        for key, value in own.items():
            if key not in allowed:
                raise InvalidArgument(
                    f"{where[i]}.parameters.{shorten(key)} is not a per-model "
                    f"parameter lorafleet knows ({', '.join(allowed)}); "
                    "recipe-wide parameters go under parameters",
                    field="recipe",
                )
            if allowed[key] == key:
                params[key] = value
            else:
                lists.setdefault(key, []).append((i, value))
    n = len(per_model)
    for key, values in lists.items():
        default = shared.get(key, 1.0 if key == "weight" else None)
        filled: list[Any] = [default] * n
        for index, value in values:
            filled[index] = value
        if any(v is None for v in filled):
            missing = filled.index(None)
            raise InvalidArgument(
                f"{where[missing]} has no {key} and the recipe sets none in "
                "parameters; give every model one",
                field="recipe",
            )
        params[PER_MODEL[key]] = filled
    for key, value in shared.items():
        if key in params:
            continue
        if key in PER_MODEL:
            if PER_MODEL[key] not in params:
                params[key if key != "weight" else "weights"] = (
                    value if key != "weight" else [value] * n
                )
        else:
            # The method's own parameters (normalize, lambda, t, select_topk,
            # filter_wise, ...): the method refuses, by name, any it lacks.
            params[key] = value
    return params


def _layer_range(value: Any, where: str) -> list[int]:
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return [int(value[0]), int(value[1])]
    raise InvalidArgument(
        f"{where}.layer_range must be [first, end] (two integers), got "
        f"{shorten(value)}",
        field="recipe",
    )


def _parse_slices(
    data: Any, recipe: Recipe, shared: dict[str, Any]
) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not data:
        raise InvalidArgument("slices must be a non-empty list", field="recipe")
    slices = []
    for i, entry in enumerate(data):
        where = f"slices[{i}]"
        if not isinstance(entry, dict) or "sources" not in entry:
            raise InvalidArgument(
                f"{where} must be {{sources: [...], parameters: ...}}", field="recipe"
            )
        for key in entry:
            if key in SLICE_NOT_YET:
                raise InvalidArgument(
                    f"{where}.{key}: {SLICE_NOT_YET[key]}", field="recipe"
                )
            if key not in SLICE_KEYS:
                raise InvalidArgument(
                    f"{where} has unknown key {shorten(key)!r}", field="recipe"
                )
        sources = entry["sources"]
        if not isinstance(sources, list) or not sources:
            raise InvalidArgument(
                f"{where}.sources must be a non-empty list", field="recipe"
            )
        base = None
        inputs, own, names = [], [], []
        for j, src in enumerate(sources):
            at = f"{where}.sources[{j}]"
            if not isinstance(src, dict) or "model" not in src:
                raise InvalidArgument(
                    f"{at} must be {{model: ..., layer_range: [a, b]}}", field="recipe"
                )
            unknown = sorted(set(src) - {"model", "layer_range", "parameters"})
            if unknown:
                raise InvalidArgument(
                    f"{at} has unknown key {unknown[0]!r}", field="recipe"
                )
            if "layer_range" not in src:
                raise InvalidArgument(f"{at} needs layer_range", field="recipe")
            item = {
                "model": _model_ref(src["model"], f"{at}.model"),
                "layer_range": _layer_range(src["layer_range"], at),
            }
            if (
                item["model"] == recipe.base_model
                and recipe.method != "slerp"
                and base is None
            ):
                base = item  # the base's layers for this slice
                continue
            inputs.append(item)
            own.append(_mapping(src.get("parameters"), f"{at}.parameters"))
            names.append(at)
        if recipe.method == "slerp" and recipe.base_model:
            # mergekit's slerp: base_model is the t = 0 end, whatever its place.
            inputs.sort(key=lambda s: s["model"] != recipe.base_model)
        elif recipe.base_model and base is None:
            raise InvalidArgument(
                f"{where} does not list base_model {recipe.base_model} among its "
                "sources; mergekit takes each slice's base layers from there",
                field="recipe",
            )
        slice_shared = {
            **shared,
            **_mapping(entry.get("parameters"), f"{where}.parameters"),
        }
        slices.append(
            {
                "base": base,
                "inputs": inputs,
                "params": _per_model_params(recipe.method, slice_shared, own, names),
            }
        )
    return slices


def _chat_template(value: Any) -> str:
    """mergekit's rules: "auto", a template name, or Jinja text."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgument(
            "chat_template must be auto, a template name or Jinja text",
            field="recipe",
        )
    if value == "auto" or value in CHAT_TEMPLATE_NAMES:
        return value
    if len(value) < 20 or "{" not in value:
        raise InvalidArgument(
            f"chat_template {shorten(value)!r} is neither auto, a known template "
            f"({', '.join(CHAT_TEMPLATE_NAMES)}) nor Jinja text",
            field="recipe",
        )
    return value


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
    source = data.get("tokenizer_source")
    if source is not None:
        if source == "union":
            raise InvalidArgument(
                "tokenizer_source: union is not supported (lorafleet does not "
                "build a merged vocabulary); use base or name one model",
                field="recipe",
            )
        if source == "base" and not recipe.base_model:
            raise InvalidArgument(
                "tokenizer_source: base needs base_model; name a model instead",
                field="recipe",
            )
        recipe.tokenizer_source = (
            recipe.base_model
            if source == "base"
            else _model_ref(source, "tokenizer_source")
        )
    if data.get("chat_template") is not None:
        recipe.chat_template = _chat_template(data["chat_template"])
    shared = _mapping(data.get("parameters"), "recipe parameters")
    if ("models" in data) == ("slices" in data):
        raise InvalidArgument(
            "the recipe needs models or slices (exactly one of them)", field="recipe"
        )
    if "slices" in data:
        recipe.slices = _parse_slices(data["slices"], recipe, shared)
        return recipe
    entries = data.get("models") or []
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("the recipe needs models (a list)", field="recipe")
    own, names = [], []
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
        if model == recipe.base_model and recipe.method != "slerp":
            # mergekit lists the base among the models at times; it is the base.
            continue
        recipe.models.append(model)
        own.append(_mapping(entry.get("parameters"), f"models[{i}].parameters"))
        names.append(f"models[{i}]")
    recipe.params = _per_model_params(recipe.method, shared, own, names)
    return recipe
