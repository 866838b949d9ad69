"""A merge job's request, resolved spec and outcome, in domain terms."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from services.common.convert import from_struct
from services.common.errors import InvalidArgument
from services.merger.finish import Checked
from services.merger.gate import GateSettings
from services.merger.lora_merge import DEFAULT_MAX_SHARD_SIZE, OUTPUT_DTYPES, MergePlan
from services.merger.model_merge import ModelMergePlan
from services.merger.quantized import ExportResult, QuantizedExport, check_exports

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class MergeRequest:
    """A StartMergeJob request in domain terms; `output_dtype` is a dtype name."""

    adapter_id: str
    output_name: str
    base_model_id: str = ""
    output_dtype: str = "same"
    tags: dict[str, str] = field(default_factory=dict)
    # "lora" merges adapter_id into its base; any other name is a model merge.
    method: str = "lora"
    input_model_ids: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    # Bytes per output safetensors file; 0 takes DEFAULT_MAX_SHARD_SIZE.
    max_shard_size: int = 0
    gate: GateSettings = field(default_factory=GateSettings)
    exports: tuple[QuantizedExport, ...] = ()
    # A mergekit recipe (YAML) standing in for method, inputs and params.
    recipe: str = ""
    # From a recipe: its slices (layer stacking) with models as registry ids,
    # as recipes.Recipe.slices says; empty merges whole models.
    slices: tuple[dict[str, Any], ...] = ()
    # From a recipe: the registry id whose tokenizer the output takes, and
    # the chat template setting ("auto", a bundled name or Jinja text).
    tokenizer_source_id: str = ""
    chat_template: str = ""

    @property
    def merges_models(self) -> bool:
        return self.method != "lora"

    @property
    def shard_size(self) -> int:
        return self.max_shard_size or DEFAULT_MAX_SHARD_SIZE

    def check(self) -> None:
        if self.merges_models:
            if self.adapter_id:
                raise InvalidArgument(
                    f"method {self.method!r} merges input_model_ids; adapter_id is "
                    "only for method 'lora'",
                    field="adapter_id",
                )
        elif not self.adapter_id:
            raise InvalidArgument(
                "adapter_id is required: the registry id of the adapter to merge",
                field="adapter_id",
            )
        if not self.output_name:
            raise InvalidArgument(
                "output_name is required: the name to register the merged model under",
                field="output_name",
            )
        if not NAME_RE.match(self.output_name):
            raise InvalidArgument(
                f"output_name {self.output_name!r} is not a valid name: use 1-128 "
                "letters, digits, '.', '_' or '-', starting with a letter or digit",
                field="output_name",
            )
        if self.output_dtype not in OUTPUT_DTYPES:
            raise InvalidArgument(
                f"output_dtype {self.output_dtype!r} is unknown; use one of "
                f"{', '.join(OUTPUT_DTYPES)}",
                field="output_dtype",
            )
        if self.max_shard_size < 0:
            raise InvalidArgument(
                f"max_shard_size must be a positive number of bytes, got "
                f"{self.max_shard_size}; 0 takes {DEFAULT_MAX_SHARD_SIZE} (2 GiB)",
                field="max_shard_size",
            )
        self.gate.check()
        check_exports(list(self.exports))


@dataclass(frozen=True)
class ResolvedMerge:
    """A checked request with its artifacts resolved and its merge planned."""

    request: MergeRequest
    adapter: Any  # lorafleet.v1.Artifact
    base: Any  # lorafleet.v1.Artifact
    # Planned at Start; None when read back from the queue (the run re-plans
    # from the files, which is cheap: headers only).
    plan: MergePlan | None
    # QLoRA: the quantisation of the base the adapter was trained on ("nf4").
    base_quantization: str = ""


@dataclass(frozen=True)
class MergeOutcome:
    merged_model_id: str
    tensors_merged: int
    tensors_total: int
    max_abs_delta: float
    seconds: float
    notes: list[str] = field(default_factory=list)
    exports: list[Any] = field(default_factory=list)  # quantized.ExportResult
    gate: dict[str, Any] = field(default_factory=dict)
    shards: int = 0

    @classmethod
    def of(cls, merged_id: str, stats: Any, checked: Checked) -> MergeOutcome:
        return cls(
            merged_model_id=merged_id,
            tensors_merged=stats.tensors_merged,
            tensors_total=stats.tensors_total,
            max_abs_delta=stats.max_abs_delta,
            seconds=stats.seconds,
            notes=checked.notes,
            exports=checked.exports,
            gate=checked.gate,
            shards=stats.written.shards,
        )

    @classmethod
    def registered(cls, merged: Any) -> MergeOutcome:
        """The outcome recorded with a registered merged model (lorafleet.v1
        Artifact): what an attempt that died after registering had achieved."""
        meta, metrics = from_struct(merged.metadata), dict(merged.metrics)
        return cls(
            merged_model_id=merged.id,
            tensors_merged=int(metrics.get("tensors_merged", 0)),
            tensors_total=int(metrics.get("tensors_total", 0)),
            max_abs_delta=float(metrics.get("max_abs_delta", 0.0)),
            seconds=float(metrics.get("merge_seconds", 0.0)),
            notes=list(meta.get("notes", [])),
            exports=[export_result(e) for e in meta.get("quantized_exports", [])],
            gate=dict(meta.get("gate", {})),
            shards=int(meta.get("shards", 0)),
        )


def export_result(data: dict[str, Any]) -> ExportResult:
    """An ExportResult from its dict (metadata summary or stored job result)."""
    names = {f.name for f in dataclasses.fields(ExportResult)}
    return ExportResult(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ResolvedModelMerge:
    """A checked whole-model merge with its inputs resolved."""

    request: Any  # MergeRequest
    base: Any | None  # lorafleet.v1.Artifact
    inputs: list[Any]
    # As ResolvedMerge.plan: None once read back from the queue.
    plan: ModelMergePlan | None
    # The model whose tokenizer the output takes (a recipe's tokenizer_source).
    tokenizer: Any | None = None
