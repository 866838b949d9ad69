"""How a training child uses its machine: threads, and the switches of its levers.

Every lever here leaves a trained adapter's numbers as they were, up to the
order floating-point sums are taken in (the reproducibility tests hold the
same seed, data and config to one sha256 with each of them on or off). They
are on by default; `LORAFLEET_TRAIN_SPEED` turns one off by name
(`labelled_logits=off,affinity_threads=off`) so bench/train_bench.py can
measure each one's own gain, and so a suspected fast-path bug can be ruled out
without a release.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

SPEED_ENV = "LORAFLEET_TRAIN_SPEED"
OFF = ("0", "off", "false", "no")


@dataclass(frozen=True)
class SpeedOptions:
    """labelled_logits: the head and the loss run only where a label is learned
    (see answer_loss.py). saved_mask_dropout: LoRA dropout keeps a bool mask
    for backward, not two float copies (lora_dropout.py). affinity_threads:
    torch's intra-op threads follow the CPUs this process may run on.
    native_dropout: that dropout's noise, on the CPU, comes from the C kernel
    that draws torch's own noise in blocks (native_dropout.py); it rides on
    saved_mask_dropout."""

    labelled_logits: bool = True
    saved_mask_dropout: bool = True
    affinity_threads: bool = True
    native_dropout: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SpeedOptions:
        """Reads `name=on|off` pairs; an unknown name is an error, not a no-op."""
        known = {f.name for f in fields(cls)}
        values: dict[str, bool] = {}
        for item in filter(None, environ.get(SPEED_ENV, "").split(",")):
            name, _, value = item.partition("=")
            name = name.strip()
            if name not in known:
                choices = ", ".join(sorted(known))
                raise ValueError(
                    f"{SPEED_ENV}: unknown lever {name!r}; known: {choices}"
                )
            values[name] = value.strip().lower() not in OFF
        return cls(**values)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least one."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # not Linux
        return max(os.cpu_count() or 1, 1)


def training_threads(environ: Mapping[str, str] = os.environ) -> int:
    """Intra-op threads for one training process.

    The affinity mask, shared out between the processes `accelerate launch`
    starts on this machine (LOCAL_WORLD_SIZE), so they do not oversubscribe.
    The dataloader runs in-process (dataloader_num_workers=0), so it takes
    no core of its own. An explicit OMP_NUM_THREADS wins.
    """
    explicit = environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) > 0:
        return int(explicit)
    local_processes = max(int(environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    return max(usable_cpus() // local_processes, 1)


def apply_threads(options: SpeedOptions) -> int:
    """Sets torch's intra-op threads (when the lever is on); returns the count."""
    import torch

    if options.affinity_threads:
        torch.set_num_threads(training_threads())
    return torch.get_num_threads()
