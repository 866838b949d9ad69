"""A StartMergeJob recipe turned into a plain model-merge request.

The models a recipe names are registry refs or model folders; folders must lie
inside the merger's readable roots and are registered on the fly as base
models named after the folder (registering the same files again returns the
same version, so a recipe re-run does not grow the registry).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.errors import InvalidArgument
from services.common.paths import confine
from services.merger.recipes import parse_recipe
from services.merger.requests import MergeRequest

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).is_absolute()


def _folder_name(path: Path) -> str:
    name = _NAME_CHARS.sub("-", path.name).strip("-._") or "model"
    return name[:100]


def from_recipe(
    request: MergeRequest,
    roots: Iterable[Path],
    registry: Any,
    get: Callable[[str], Any],
) -> MergeRequest:
    """`request` with method, inputs, base, params and dtype from its recipe."""
    given = [
        name
        for name, value in (
            ("method", request.method if request.method != "lora" else ""),
            ("input_model_ids", request.input_model_ids),
            ("base_model_id", request.base_model_id),
            ("params", request.params),
            ("adapter_id", request.adapter_id),
        )
        if value
    ]
    if given:
        raise InvalidArgument(
            f"give a recipe or {', '.join(given)}, not both: the recipe names the "
            "method, the models and their parameters",
            field=given[0],
        )
    recipe = parse_recipe(request.recipe)
    roots = list(roots)

    def model_id(ref: str, where: str) -> str:
        if _looks_like_path(ref):
            folder = confine(ref, roots, field=f"recipe {where}")
            reply = registry.RegisterArtifact(
                registry_pb2.RegisterArtifactRequest(
                    reuse_existing=True,
                    kind=common_pb2.ARTIFACT_KIND_BASE_MODEL,
                    name=_folder_name(folder),
                    source_path=str(folder),
                )
            )
            return reply.artifact.id
        return get(ref).id

    ids: dict[str, str] = {}

    def resolved(ref: str, where: str) -> str:
        if ref not in ids:
            ids[ref] = model_id(ref, where)
        return ids[ref]

    base, models = recipe.inputs()
    slices = tuple(
        {
            "base": {**s["base"], "model": resolved(s["base"]["model"], f"slices[{i}]")}
            if s["base"]
            else None,
            "inputs": [
                {**src, "model": resolved(src["model"], f"slices[{i}]")}
                for src in s["inputs"]
            ],
            "params": s["params"],
        }
        for i, s in enumerate(recipe.slices)
    )
    return dataclasses.replace(
        request,
        method=recipe.method,
        base_model_id=resolved(base, "base_model") if base else "",
        input_model_ids=tuple(
            resolved(m, f"models[{i}]") for i, m in enumerate(models)
        ),
        params=recipe.params,
        output_dtype=recipe.dtype or request.output_dtype,
        slices=slices,
        tokenizer_source_id=resolved(recipe.tokenizer_source, "tokenizer_source")
        if recipe.tokenizer_source
        else "",
        chat_template=recipe.chat_template,
    )
