"""A job's checkpoint folder: which checkpoint to resume from, and when to drop them.

transformers' Trainer writes `checkpoint-<step>/` folders (adapter weights,
optimizer, scheduler, RNG states, then `trainer_state.json` last). A trainer
killed mid-save leaves a partial folder; only folders whose `trainer_state.json`
parses and names the folder's step, next to the model weights, count as
complete. The optimizer, scheduler and RNG files in a checkpoint are read back
with `torch.load(weights_only=True)` by the Trainer on resume: they are files
this trainer wrote itself into its own checkpoint_dir, never user input.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "checkpoint-"
RUN_FILE = "run.json"  # the fingerprint of the run the checkpoints belong to
# Model weights a complete checkpoint holds: the PEFT adapter (single process,
# DDP, FSDP with a full state dict) or an FSDP model file.
WEIGHTS = (
    "adapter_model.safetensors",
    "pytorch_model_fsdp.bin",
    "pytorch_model_fsdp_0",
)


def step_of(folder: Path) -> int | None:
    match = re.fullmatch(rf"{PREFIX}(\d+)", folder.name)
    return int(match.group(1)) if match else None


def is_complete(folder: Path) -> bool:
    """True when the Trainer finished writing `folder` (trainer_state.json is last)."""
    step = step_of(folder)
    if step is None or not folder.is_dir():
        return False
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    if state.get("global_step") != step:
        return False
    return any((folder / name).exists() for name in WEIGHTS)


def checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Every checkpoint folder, complete or not, oldest step first."""
    if not checkpoint_dir.is_dir():
        return []
    found = [p for p in checkpoint_dir.iterdir() if step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def latest_complete(checkpoint_dir: Path) -> Path | None:
    complete = [p for p in checkpoints(checkpoint_dir) if is_complete(p)]
    return complete[-1] if complete else None


def prepare(checkpoint_dir: Path, fingerprint: str, *, writer: bool) -> Path | None:
    """The checkpoint to resume from (None: start fresh), after tidying the folder.

    Checkpoints of a different run (another config, base or dataset under the
    same folder) are discarded, as are partial ones newer than the resume point,
    so the Trainer's rotation never keeps a broken folder as "the latest".
    Only the `writer` (rank 0) changes the folder; other ranks just read it.
    """
    run_file = checkpoint_dir / RUN_FILE
    try:
        previous = json.loads(run_file.read_text()).get("fingerprint")
    except (OSError, ValueError):
        previous = None
    if previous != fingerprint:
        if writer and checkpoints(checkpoint_dir):
            log.warning(
                "checkpoints in %s belong to another run; starting afresh",
                checkpoint_dir,
            )
        if writer:
            for folder in checkpoints(checkpoint_dir):
                shutil.rmtree(folder, ignore_errors=True)
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_file, {"fingerprint": fingerprint})
        return None
    resume = latest_complete(checkpoint_dir)
    if writer:
        for folder in checkpoints(checkpoint_dir):
            if not is_complete(folder):
                log.warning("removing partially written checkpoint %s", folder)
                shutil.rmtree(folder, ignore_errors=True)
    return resume


def fingerprint(base_dir: Path, dataset_file: Path, config: dict) -> str:
    """What a checkpoint must match to be resumed: the inputs and the config."""
    payload = json.dumps(
        {"base": str(base_dir), "dataset": str(dataset_file), "config": config},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def write_json_atomic(path: Path, payload: dict) -> None:
    """Writes JSON to a temp file beside `path`, fsyncs, then renames over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
