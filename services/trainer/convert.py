"""Trainer protobuf <-> domain conversions: TrainConfig and DatasetReport."""

from __future__ import annotations

from lorafleet.v1 import common_pb2, trainer_pb2
from services.trainer.dataset_report import DatasetReport
from services.trainer.spec import TrainConfig

METHODS = {
    common_pb2.LORA_METHOD_LORA: "lora",
    common_pb2.LORA_METHOD_RSLORA: "rslora",
    common_pb2.LORA_METHOD_DORA: "dora",
    common_pb2.LORA_METHOD_QLORA: "qlora",
}
SCHEDULES = {
    common_pb2.LR_SCHEDULE_LINEAR: "linear",
    common_pb2.LR_SCHEDULE_COSINE: "cosine",
    common_pb2.LR_SCHEDULE_CONSTANT: "constant",
}
TASKS = {
    common_pb2.TASK_TYPE_AUTO: "auto",
    common_pb2.TASK_TYPE_TEXT: "text",
    common_pb2.TASK_TYPE_INSTRUCTION: "instruction",
    common_pb2.TASK_TYPE_CHAT: "chat",
    common_pb2.TASK_TYPE_CLASSIFICATION: "classification",
    common_pb2.TASK_TYPE_COMPLETION: "completion",
    common_pb2.TASK_TYPE_PREFERENCE: "preference",
}
PRECISIONS = {
    common_pb2.MIXED_PRECISION_AUTO: "auto",
    common_pb2.MIXED_PRECISION_NO: "no",
    common_pb2.MIXED_PRECISION_BF16: "bf16",
    common_pb2.MIXED_PRECISION_FP16: "fp16",
}
PACKING_MODES = {
    common_pb2.PACKING_MODE_AUTO: "auto",
    common_pb2.PACKING_MODE_ON: "on",
    common_pb2.PACKING_MODE_OFF: "off",
}
STRATEGIES = {
    common_pb2.DISTRIBUTED_STRATEGY_AUTO: "auto",
    common_pb2.DISTRIBUTED_STRATEGY_DDP: "ddp",
    common_pb2.DISTRIBUTED_STRATEGY_FSDP: "fsdp",
}


def config_from_pb(pb: common_pb2.TrainConfig) -> TrainConfig:
    """Zero fields take the documented defaults; negative values stay to be refused."""
    d = TrainConfig()
    return TrainConfig(
        method=METHODS.get(pb.method, d.method if not pb.method else f"#{pb.method}"),
        rank=pb.rank if pb.HasField("rank") else d.rank,
        alpha=pb.alpha,
        dropout=pb.dropout if pb.HasField("dropout") else d.dropout,
        target_modules=list(pb.target_modules),
        learning_rate=pb.learning_rate
        if pb.HasField("learning_rate")
        else d.learning_rate,
        lr_schedule=SCHEDULES.get(pb.lr_schedule, d.lr_schedule),
        warmup_steps=pb.warmup_steps,
        max_steps=pb.max_steps,
        epochs=pb.epochs or d.epochs,
        batch_size=pb.batch_size or d.batch_size,
        gradient_accumulation_steps=pb.gradient_accumulation_steps
        or d.gradient_accumulation_steps,
        max_seq_length=pb.max_seq_length or d.max_seq_length,
        seed=pb.seed or d.seed,
        task_type=TASKS.get(pb.task_type, d.task_type),
        eval_fraction=pb.eval_fraction
        if pb.HasField("eval_fraction")
        else d.eval_fraction,
        weight_decay=pb.weight_decay,
        eval_steps=pb.eval_steps,
        modules_to_save=list(pb.modules_to_save),
        gradient_checkpointing=pb.gradient_checkpointing,
        mixed_precision=PRECISIONS.get(pb.mixed_precision, d.mixed_precision),
        packing_mode="on"
        if pb.packing and not pb.packing_mode
        else PACKING_MODES.get(pb.packing_mode, d.packing_mode),
        packing=pb.packing or pb.packing_mode == common_pb2.PACKING_MODE_ON,
        group_by_length=pb.group_by_length,
        checkpoint_steps=pb.checkpoint_steps or d.checkpoint_steps,
        early_stopping_patience=pb.early_stopping_patience,
        early_stopping_threshold=pb.early_stopping_threshold,
        num_gpus=pb.num_gpus,
        distributed_strategy=STRATEGIES.get(
            pb.distributed_strategy, d.distributed_strategy
        ),
        labels=list(pb.labels),
        preference_beta=pb.preference_beta
        if pb.HasField("preference_beta")
        else d.preference_beta,
    )


def dataset_check_config_from_pb(pb: trainer_pb2.ValidateDatasetRequest) -> TrainConfig:
    """The TrainConfig a ValidateDataset request describes; unset takes defaults."""
    d = TrainConfig()
    return TrainConfig(
        max_seq_length=pb.max_seq_length or d.max_seq_length,
        eval_fraction=pb.eval_fraction
        if pb.HasField("eval_fraction")
        else d.eval_fraction,
        seed=pb.seed or d.seed,
        task_type=TASKS.get(pb.task_type, d.task_type),
        labels=list(pb.labels),
    )


def config_to_pb(cfg: TrainConfig) -> common_pb2.TrainConfig:
    inverse = lambda table, v: next((k for k, name in table.items() if name == v), 0)  # noqa: E731
    return common_pb2.TrainConfig(
        method=inverse(METHODS, cfg.method),
        rank=cfg.rank,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        learning_rate=cfg.learning_rate,
        lr_schedule=inverse(SCHEDULES, cfg.lr_schedule),
        warmup_steps=cfg.warmup_steps,
        max_steps=cfg.max_steps,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_seq_length=cfg.max_seq_length,
        seed=cfg.seed,
        task_type=inverse(TASKS, cfg.task_type),
        eval_fraction=cfg.eval_fraction,
        weight_decay=cfg.weight_decay,
        eval_steps=cfg.eval_steps,
        modules_to_save=cfg.modules_to_save,
        gradient_checkpointing=cfg.gradient_checkpointing,
        mixed_precision=inverse(PRECISIONS, cfg.mixed_precision),
        packing=cfg.packing and cfg.packing_mode == "on",
        packing_mode=inverse(PACKING_MODES, cfg.packing_mode),
        group_by_length=cfg.group_by_length,
        checkpoint_steps=cfg.checkpoint_steps,
        early_stopping_patience=cfg.early_stopping_patience,
        early_stopping_threshold=cfg.early_stopping_threshold,
        num_gpus=cfg.num_gpus,
        distributed_strategy=inverse(STRATEGIES, cfg.distributed_strategy),
        labels=cfg.labels,
        preference_beta=cfg.preference_beta,
    )


def report_to_pb(report: DatasetReport) -> trainer_pb2.DatasetReport:
    inverse_task = next((k for k, v in TASKS.items() if v == report.task), 0)
    return trainer_pb2.DatasetReport(
        passed=report.passed,
        summary=report.summary,
        task_type=inverse_task,
        row_count=report.row_count,
        empty_rows=report.empty_rows,
        duplicate_rows=report.duplicate_rows,
        over_length_rows=report.over_length_rows,
        truncated_tokens=report.truncated_tokens,
        no_answer_rows=report.no_answer_rows,
        total_tokens=report.total_tokens,
        max_row_tokens=report.max_row_tokens,
        train_rows=report.train_rows,
        eval_rows=report.eval_rows,
        issues=[
            trainer_pb2.DatasetIssue(
                line=i.line, kind=i.kind, message=i.message, fatal=i.fatal
            )
            for i in report.issues
        ],
        max_seq_length=report.max_seq_length,
        eval_fraction=report.eval_fraction,
        seed=report.seed,
        label_counts=report.label_counts,
        imbalance_ratio=report.imbalance_ratio,
    )
