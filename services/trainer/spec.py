"""A training run's hyperparameters: documented defaults and range checks."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from services.common.errors import InvalidArgument, shorten

METHODS = ("lora", "rslora", "dora", "qlora")
SCHEDULES = ("linear", "cosine", "constant")
TASKS = (
    "auto",
    "text",
    "instruction",
    "chat",
    "classification",
    "completion",
    "preference",
)
PRECISIONS = ("auto", "no", "bf16", "fp16")
PACKING_MODES = ("auto", "on", "off")
STRATEGIES = ("auto", "ddp", "fsdp")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class TrainConfig:
    """Hyperparameters after defaults; mirrors lorafleet.v1.TrainConfig."""

    method: str = "lora"
    rank: int = 16
    alpha: float = 0.0  # 0 -> 2 * rank
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=list)  # [] -> by architecture
    learning_rate: float = 2e-4
    lr_schedule: str = "linear"
    warmup_steps: int = 0
    max_steps: int = 0
    epochs: float = 1.0
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 512
    seed: int = 42
    task_type: str = "auto"
    eval_fraction: float = 0.1
    weight_decay: float = 0.0
    eval_steps: int = 0
    modules_to_save: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    # "on" packs (refused where unsafe), "off" never does, "auto" packs where
    # the model keeps packed examples apart and groups by length elsewhere;
    # `packing` is True when the run packs ("on", or "auto" once resolved).
    packing_mode: str = "auto"
    packing: bool = False
    group_by_length: bool = False
    checkpoint_steps: int = 50
    early_stopping_patience: int = 0
    early_stopping_threshold: float = 0.0
    num_gpus: int = 0  # 0 -> one GPU when present, else CPU
    distributed_strategy: str = "auto"
    labels: list[str] = field(default_factory=list)  # classification label set
    preference_beta: float = 0.1

    def __post_init__(self) -> None:
        if not self.alpha:
            self.alpha = float(2 * self.rank)

    def check(self) -> None:
        """Raises InvalidArgument naming the first out-of-range field."""
        _choice("method", self.method, METHODS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("task_type", self.task_type, TASKS)
        _choice("mixed_precision", self.mixed_precision, PRECISIONS)
        _choice("packing_mode", self.packing_mode, PACKING_MODES)
        if self.packing and self.packing_mode == "off":
            raise InvalidArgument(
                "config.packing is set but packing_mode is OFF; give one of them",
                field="config.packing_mode",
            )
        _choice("distributed_strategy", self.distributed_strategy, STRATEGIES)
        _range("rank", self.rank, 1, 1024)
        _range("alpha", self.alpha, 1e-6, 1e6)
        _range("dropout", self.dropout, 0.0, 0.9)
        _range(
            "learning_rate",
            self.learning_rate,
            1e-8,
            1.0,
            hint="typical LoRA rates are 1e-5 to 1e-3",
        )
        _range("warmup_steps", self.warmup_steps, 0, 10**7)
        _range("max_steps", self.max_steps, 0, 10**7)
        _range("epochs", self.epochs, 1e-3, 1000)
        _range("batch_size", self.batch_size, 1, 4096)
        _range("gradient_accumulation_steps", self.gradient_accumulation_steps, 1, 4096)
        _range("max_seq_length", self.max_seq_length, 8, 131072)
        _range("eval_fraction", self.eval_fraction, 0.0, 0.5)
        _range("weight_decay", self.weight_decay, 0.0, 1.0)
        _range("eval_steps", self.eval_steps, 0, 10**7)
        _range("checkpoint_steps", self.checkpoint_steps, 1, 10**7)
        _range("early_stopping_patience", self.early_stopping_patience, 0, 10**4)
        _range("early_stopping_threshold", self.early_stopping_threshold, 0.0, 1e3)
        _range("num_gpus", self.num_gpus, 0, 1024)
        _range("preference_beta", self.preference_beta, 1e-4, 100.0)
        if self.early_stopping_patience and not self.eval_steps:
            raise InvalidArgument(
                "config.early_stopping_patience needs config.eval_steps: early "
                "stopping compares eval loss between evaluations",
                field="config.early_stopping_patience",
            )
        for key in ("target_modules", "modules_to_save"):
            for name in getattr(self, key):
                if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
                    raise InvalidArgument(
                        f"{key} entry {shorten(name)!r} is not a module name",
                        field=f"config.{key}",
                    )
        if len(set(self.labels)) != len(self.labels) or any(
            not label for label in self.labels
        ):
            raise InvalidArgument(
                f"config.labels must be distinct non-empty strings, got "
                f"{shorten(self.labels)}",
                field="config.labels",
            )
        if len(self.labels) == 1:
            raise InvalidArgument(
                f"config.labels declares only {self.labels}: a classifier needs "
                "at least 2 labels (or leave labels empty to take them from the data)",
                field="config.labels",
            )
        if self.labels and self.task_type not in ("auto", "classification"):
            raise InvalidArgument(
                f"config.labels applies to classification, not task_type "
                f"{self.task_type}; leave labels empty",
                field="config.labels",
            )
        if self.packing and self.task_type in ("classification", "preference"):
            raise InvalidArgument(
                f"config.packing applies to causal-LM tasks (text, instruction, "
                f"chat, completion), not {self.task_type}; turn packing off",
                field="config.packing",
            )
        if self.group_by_length and self.task_type == "preference":
            raise InvalidArgument(
                "config.group_by_length does not apply to preference data; turn it off",
                field="config.group_by_length",
            )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainSpec:
    """What to train: ids resolve through the registry at Start."""

    base_model_id: str
    dataset_id: str
    adapter_name: str
    config: TrainConfig
    tags: dict[str, str] = field(default_factory=dict)
    # A JSONL file to check instead of dataset_id (validate_only requests only).
    dataset_path: str = ""

    def check(self, *, allow_path: bool = False) -> None:
        if not self.base_model_id:
            raise InvalidArgument(
                "base_model_id is required: the registry id of the base model to adapt",
                field="base_model_id",
            )
        if self.dataset_path and not allow_path:
            raise InvalidArgument(
                "dataset_path is only accepted with validate_only; register the "
                "dataset and pass its id as dataset_id",
                field="dataset_path",
            )
        if self.dataset_path and self.dataset_id:
            raise InvalidArgument(
                "give dataset_id or dataset_path, not both", field="dataset_id"
            )
        if not self.dataset_id and not self.dataset_path:
            raise InvalidArgument(
                "dataset_id is required: the registry id of a dataset version",
                field="dataset_id",
            )
        if not NAME_RE.match(self.adapter_name or ""):
            raise InvalidArgument(
                f"adapter_name {shorten(self.adapter_name)!r} must match "
                f"{NAME_RE.pattern}",
                field="adapter_name",
            )
        self.config.check()


def _choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise InvalidArgument(
            f"config.{name} {shorten(value)!r} is not one of {', '.join(valid)}",
            field=f"config.{name}",
        )


def _range(name: str, value: float, low: float, high: float, hint: str = "") -> None:
    if not low <= value <= high:
        extra = f"; {hint}" if hint else ""
        raise InvalidArgument(
            f"config.{name} must be in [{low:g}, {high:g}], got {value:g}{extra}",
            field=f"config.{name}",
        )
