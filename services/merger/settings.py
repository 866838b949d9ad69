"""Parameter settings that vary over the model, as mergekit writes them.

A numeric merge parameter may be
- a number: the same everywhere;
- a list of numbers, a *gradient*: anchors spread evenly over the layers and
  interpolated linearly (layer i of L sits at t = i / (L - 1); tensors outside
  the layers, such as embeddings, norms and the head, at t = 0);
- a list of {"filter": "self_attn", "value": ...} entries: the first whose
  filter occurs in the tensor's name (or has none, or "*") applies; its value
  may itself be a number or a gradient.

`evaluate` follows mergekit 0.1.5's `evaluate_setting` exactly (including the
truncation of `t * (n - 1)`), so a recipe gives mergekit's numbers.
"""

from __future__ import annotations

import json
import math
from typing import Any

from services.common.errors import InvalidArgument, shorten

Setting = Any  # float | list[float] | list[{"filter": str, "value": Setting}]


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _shown(value: Any) -> str:
    try:
        return shorten(json.dumps(value))
    except (TypeError, ValueError):
        return shorten(repr(value))


def check_setting(
    name: str, value: Setting, *, help: str = "", depth: int = 0
) -> Setting:
    """`value` if it is a number, a gradient or a filter list, else
    INVALID_ARGUMENT naming the parameter and the accepted shapes."""
    if _is_number(value):
        return float(value)
    if isinstance(value, list) and value:
        if all(_is_number(v) for v in value):
            return [float(v) for v in value]
        if depth == 0 and all(isinstance(v, dict) for v in value):
            checked = []
            for i, cond in enumerate(value):
                unknown = sorted(set(cond) - {"filter", "value"})
                if unknown or "value" not in cond:
                    raise InvalidArgument(
                        f"{name}[{i}] must be {{filter: <part of a tensor name>, "
                        f"value: <number or gradient>}}, got {shorten(cond)}",
                        field=f"params.{name}",
                    )
                filt = cond.get("filter")
                if filt is not None and not isinstance(filt, str):
                    raise InvalidArgument(
                        f"{name}[{i}].filter must be text (e.g. self_attn, mlp), "
                        f"got {shorten(filt)}",
                        field=f"params.{name}",
                    )
                checked.append(
                    {
                        "filter": filt,
                        "value": check_setting(
                            f"{name}[{i}].value", cond["value"], depth=1
                        ),
                    }
                )
            return checked
    what = f" ({help})" if help else ""
    raise InvalidArgument(
        f"parameter {name} must be a finite number{what}, a list of numbers (a "
        "gradient over the layers) or a list of {filter, value} entries, got "
        f"{_shown(value)}",
        field=f"params.{name.split('[')[0]}",
    )


def evaluate(setting: Setting, tensor_name: str, t: float) -> float | None:
    """The value of `setting` for one tensor at position `t` in [0, 1]."""
    if _is_number(setting):
        return float(setting)
    if not setting:
        return None
    if all(_is_number(v) for v in setting):
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    for cond in setting:
        filt = cond.get("filter")
        if filt is None or filt == "*" or (tensor_name and filt in tensor_name):
            return evaluate(cond["value"], tensor_name, t)
    return None


def value_at(setting: Setting, name: str, tensor_name: str, t: float) -> float:
    """`evaluate`, with a filter list that matches nothing refused naming the
    parameter `name` (mergekit would silently leave the tensor unmerged)."""
    value = evaluate(setting, tensor_name, t)
    if value is None:
        raise InvalidArgument(
            f"{name} has no filter matching tensor {tensor_name}; end the filter "
            "list with an entry without a filter (the default)",
            field=f"params.{name.split('[')[0]}",
        )
    return value


def position(layer: int | None, num_layers: int) -> float:
    """mergekit's t of a tensor: its layer's place among the layers, 0 outside."""
    if layer is None:
        return 0.0
    if num_layers > 1:
        return layer / (num_layers - 1)
    return 1.0


def numbers_in(setting: Setting) -> list[float]:
    """Every number in a checked setting (scalar, gradient or filters), for
    range checks that must hold wherever the setting applies."""
    if isinstance(setting, float):
        return [setting]
    out: list[float] = []
    for item in setting:
        out += numbers_in(item["value"]) if isinstance(item, dict) else [item]
    return out
