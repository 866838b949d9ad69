"""The interface every merge method implements, and typed, checked parameters."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from services.common.errors import InvalidArgument, shorten
from services.merger.settings import position

_LAYER = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def param(default: Any = dataclasses.MISSING, *, help: str, **kw: Any) -> Any:
    """A dataclass field that carries help text for error messages and the CLI."""
    meta = {"help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass(kw_only=True)
class MergeParams:
    """Parameters shared by every method; subclasses add their own."""

    weights: list[float] = param(
        [], help="one weight per input model (default: 1.0 each)"
    )

    def check(self, n_inputs: int) -> None:
        self.check_weight_count(n_inputs)
        for i, w in enumerate(self.weights):
            if not math.isfinite(w):
                raise InvalidArgument(
                    f"parameter weights[{i}] must be a finite number (one weight "
                    f"per input model), got {shown(w)}",
                    field="params.weights",
                )

    def check_weight_count(self, n_inputs: int) -> None:
        if self.weights and len(self.weights) != n_inputs:
            raise InvalidArgument(
                f"weights has {len(self.weights)} values but there are {n_inputs} "
                "input models; give one weight per input or none",
                field="params.weights",
            )

    def weight_list(self, n_inputs: int) -> list[float]:
        return list(self.weights) if self.weights else [1.0] * n_inputs


@dataclass(frozen=True)
class TensorContext:
    """Where in the model a tensor sits, for per-layer parameters and seeding."""

    name: str
    num_layers: int = 0
    seed: int = 0
    # mergekit's t of the tensor when the caller knows it (a layer stack: t
    # runs from 0 to 1 within each output slice); None derives it from the
    # layer index and num_layers.
    t: float | None = None

    @property
    def layer(self) -> int | None:
        match = _LAYER.search(f".{self.name}")
        return int(match.group(1)) if match else None

    @property
    def position(self) -> float:
        """Where gradients are evaluated: 0 outside the layers, layer i of L at
        i / (L - 1) (mergekit's t)."""
        if self.t is not None:
            return self.t
        return position(self.layer, self.num_layers)

    def generator(self, index: int) -> torch.Generator:
        """A generator seeded by (seed, tensor name, input index): reproducible."""
        salt = zlib.crc32(f"{self.name}#{index}".encode())
        return torch.Generator().manual_seed((self.seed * 1_000_003 + salt) % 2**63)


class MergeMethod(ABC):
    """One way of combining models, tensor by tensor.

    Implementations receive float32 tensors of equal shape and return the merged
    float32 tensor; the executor handles I/O, dtype and streaming.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[MergeParams]] = MergeParams
    needs_base: ClassVar[bool] = True
    # A method that may take a base (multislerp: the origin of its sphere).
    accepts_base: ClassVar[bool] = False
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = None

    @abstractmethod
    def merge(
        self,
        base: torch.Tensor | None,
        inputs: list[torch.Tensor],
        params: MergeParams,
        ctx: TensorContext,
    ) -> torch.Tensor: ...

    def check_inputs(self, n_inputs: int, has_base: bool) -> None:
        if has_base and not (self.needs_base or self.accepts_base):
            # A base the method never reads would be silently ignored (mergekit's
            # linear ignores it too; its slerp uses it as the t = 0 end, which
            # a lorafleet request says by listing that model first).
            raise InvalidArgument(
                f"method {self.name!r} does not use a base model; leave "
                "base_model_id empty"
                + (
                    " and list the t = 0 model first in input_model_ids (a "
                    "mergekit recipe's base_model is mapped so)"
                    if self.name == "slerp"
                    else ""
                ),
                field="base_model_id",
            )
        if self.needs_base and not has_base:
            raise InvalidArgument(
                f"method {self.name!r} needs a base model (task vectors are "
                "differences from it); set base_model_id",
                field="base_model_id",
            )
        if n_inputs < self.min_inputs or (
            self.max_inputs is not None and n_inputs > self.max_inputs
        ):
            wanted = (
                f"exactly {self.min_inputs}"
                if self.min_inputs == self.max_inputs
                else f"at least {self.min_inputs}"
            )
            raise InvalidArgument(
                f"method {self.name!r} takes {wanted} input models, got {n_inputs}",
                field="inputs",
            )


def describe_params(params_type: type[MergeParams]) -> str:
    """'name (help)' for every parameter, for error messages."""
    return "; ".join(
        f"{f.name} ({f.metadata.get('help', '')})"
        for f in dataclasses.fields(params_type)
    )


def parse_params(
    method: MergeMethod, raw: dict[str, Any], n_inputs: int
) -> MergeParams:
    """Builds the method's typed parameters; unknown or missing ones are refused.

    `lambda` (mergekit's name, a Python keyword) is accepted for `scale`.
    """
    fields = {f.name: f for f in dataclasses.fields(method.Params)}
    if "lambda" in raw and "scale" in fields:
        if "scale" in raw:
            raise InvalidArgument(
                "give lambda or scale (the same parameter), not both",
                field="params.lambda",
            )
        raw = {("scale" if k == "lambda" else k): v for k, v in raw.items()}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise InvalidArgument(
            f"method {method.name!r} has no parameter {shorten(', '.join(unknown))}; "
            f"valid parameters: {describe_params(method.Params)}",
            field="params",
        )
    missing = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and name not in raw
    ]
    if missing:
        raise InvalidArgument(
            f"method {method.name!r} needs parameter {', '.join(missing)}; valid "
            f"parameters: {describe_params(method.Params)}",
            field=f"params.{missing[0]}",
        )
    raw = {k: _typed(fields[k], v) for k, v in raw.items()}
    try:
        params = method.Params(**raw)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"bad parameters for {method.name!r}: {exc}", field="params"
        ) from exc
    params.check(n_inputs)
    return params


def _typed(f: dataclasses.Field, value: Any) -> Any:
    """`value` as the field's type, or INVALID_ARGUMENT naming what was expected.

    Parameters arrive as JSON (a protobuf Struct), so a string where a number
    belongs, a NaN, or an integral float for an int field (JSON has one number
    type) all reach here; only the last is accepted.
    """
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    if kind in ("bool", "bool | None"):
        if isinstance(value, bool):
            return value
        raise _wrong(f, value, "true or false")
    if kind == "str":
        if isinstance(value, str):
            return value
        raise _wrong(f, value, "text")
    if kind == "Setting":
        return value  # checked by the params' check() (number, gradient, filters)
    if kind == "list[Setting]":
        if not isinstance(value, list):
            raise _wrong(f, value, "a list with one setting per input model")
        return value  # each setting is checked by the params' check()
    if kind in ("float", "int"):
        return _number(f, f.name, value, integer=kind == "int")
    if kind == "list[float]":
        if not isinstance(value, list):
            raise _wrong(f, value, "a list of finite numbers")
        return [_number(f, f"{f.name}[{i}]", v) for i, v in enumerate(value)]
    return value


def _number(f: dataclasses.Field, name: str, value: Any, integer: bool = False):
    what = "an integer" if integer else "a finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong(f, value, what, name)
    if not math.isfinite(value):
        raise _wrong(f, value, what, name)
    if integer:
        if not float(value).is_integer():
            raise _wrong(f, value, what, name)
        return int(value)
    return float(value)


def _wrong(
    f: dataclasses.Field, value: Any, expected: str, name: str | None = None
) -> InvalidArgument:
    return InvalidArgument(
        f"parameter {name or f.name} must be {expected} "
        f"({f.metadata.get('help', '')}), got {shown(value)}",
        field=f"params.{f.name}",
    )


def shown(value: Any) -> str:
    """A parameter value as the caller wrote it (JSON), cut to a readable length."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return shorten(text)


def check_density(density: float) -> None:
    if not 0.0 < density <= 1.0:
        raise InvalidArgument(
            f"density must be in (0, 1], got {shown(density)}",
            field="params.density",
        )


def check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise InvalidArgument(
            f"{name} must be in [0, 1], got {shown(value)}", field=f"params.{name}"
        )


def task_vectors(base: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    return [x - base for x in inputs]


def keep_top_magnitude(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Zeroes all but the `density` fraction of entries with the largest |value|."""
    if density >= 1.0:
        return tensor.clone()
    k = max(1, int(round(density * tensor.numel())))
    flat = tensor.flatten()
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.abs().topk(k, sorted=False).indices] = True
    return torch.where(keep, flat, torch.zeros_like(flat)).view_as(tensor)
