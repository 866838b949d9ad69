"""A classification adapter trained by the real trainer on a tiny model.

`train_classifier` runs the trainer's own fine_tune (CPU, a few steps) on
rows of {"text", "label"}, so the adapter's files are exactly what a
classification training job writes (PEFT task_type SEQ_CLS, the `score` head
saved with the LoRA weights); `trainer_metadata` is what the trainer
registers with it (task_type, class_labels, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.convert import struct

LABELS = ["lamps", "socks"]
ROWS = [
    {"text": f"ship {i} desk lamps to Oslo", "label": "lamps"}
    if i % 2
    else {"text": f"order {i} pairs of socks", "label": "socks"}
    for i in range(24)
]
# Texts of different lengths (batches pad them) and their classes.
TEXTS = [
    ("ship 31 desk lamps to Oslo", "lamps"),
    ("order 40 pairs of socks", "socks"),
    ("ship 7 desk lamps to Oslo and 3 desk lamps to Bergen", "lamps"),
    ("order 2 pairs of socks, 5 pairs of socks and 9 pairs of socks", "socks"),
    ("lamps", None),
]


def train_classifier(
    base_dir: Path, out_dir: Path, method: str = "lora"
) -> dict[str, Any]:
    """Trains a classification adapter into `out_dir` (`method` lora, dora,
    rslora); returns its metadata as the trainer registers it (without the
    base ids)."""
    from services.trainer.registration import TRAINING_FACTS
    from services.trainer.spec import TrainConfig
    from services.trainer.training import fine_tune

    data = out_dir.parent / f"{out_dir.name}-rows.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = TrainConfig(
        rank=4,
        learning_rate=1e-2,
        max_steps=6,
        batch_size=4,
        max_seq_length=64,
        eval_fraction=0.0,
        method=method,
    )
    outcome = fine_tune(
        base_dir,
        data,
        out_dir,
        cfg,
        device="cpu",
        on_progress=lambda *_: None,
        should_stop=lambda: False,
    )
    assert outcome.task == "classification"
    return {
        "task_type": outcome.task,
        "method": cfg.method,
        "rank": cfg.rank,
        "target_modules": outcome.target_modules,
        **{k: v for k, v in outcome.extra.items() if k in TRAINING_FACTS},
    }


def register_adapter(
    registry, base, adapter_dir: Path, name: str, metadata: dict[str, Any]
) -> common_pb2.Artifact:
    """Registers an adapter trained on `base` with the trainer's metadata."""
    return registry.RegisterArtifact(
        registry_pb2.RegisterArtifactRequest(
            kind=common_pb2.ARTIFACT_KIND_ADAPTER,
            name=name,
            source_path=str(adapter_dir),
            metadata=struct(
                {
                    "base_model_id": base.id,
                    "base_model_digest": base.digest,
                    **metadata,
                }
            ),
        ),
        timeout=120,
    ).artifact
