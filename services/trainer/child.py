"""A training child process: `python -m services.trainer.child <task.json>`.

Started by `runner.run_training` (directly, or once per GPU under `accelerate
launch`). Runs `fine_tune` on the task, appends progress events to
`events.jsonl` beside the task file and writes `result.json` there atomically:
the outcome, or the error as class, code and message so the parent can raise
the same domain error. Only rank 0 reports and writes results.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import sys
import threading
import traceback
from dataclasses import asdict
from pathlib import Path

from services.common.errors import LorafleetError
from services.trainer.checkpoints import write_json_atomic
from services.trainer.runner import WATCH_PARENT_ENV, TrainingTask

OOM_TEXT = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "failed to map segment",  # a shared library that no longer fits
)
# A failure within this much of the memory limit is taken for running out of
# it: under RLIMIT_AS small allocations fail in odd ways (SystemError, ...).
NEAR_LIMIT_BYTES = 64 * 1024 * 1024


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m services.trainer.child <task.json>", file=sys.stderr)
        return 2
    task_file = Path(argv[1])
    task = TrainingTask.from_json(task_file.read_text())
    if task.memory_limit_mb > 0:
        limit_memory(task.memory_limit_mb, task.device)
    if os.environ.get(WATCH_PARENT_ENV) == "1":
        watch_parent()
    rank = int(os.environ.get("RANK", "0"))
    with continued_trace(task.job_id):
        result = run(task, task_file.parent / "events.jsonl", rank)
    if rank == 0:
        write_json_atomic(task_file.parent / "result.json", result)
    return 0 if result["ok"] else 1


@contextlib.contextmanager
def continued_trace(job_id: str):
    """Continues the trainer's trace (TRACEPARENT) in this process: its log
    lines carry the job's trace id, and its span is exported where the
    trainer's are (OTLP or console, from the same LORAFLEET_* settings)."""
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    from services.common.config import load_config
    from services.common.telemetry import (
        TRACEPARENT_ENV,
        context_from_traceparent,
        setup_logging,
        setup_tracing,
    )

    config = load_config()
    setup_logging("trainer-child", config)
    setup_tracing("trainer-child", config)
    token = otel_context.attach(
        context_from_traceparent(os.environ.get(TRACEPARENT_ENV, ""))
    )
    tracer = trace.get_tracer("lorafleet.trainer.child")
    try:
        with tracer.start_as_current_span(
            "train.child", attributes={"lorafleet.job_id": job_id}
        ):
            yield
    finally:
        otel_context.detach(token)
        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()  # flush the batch exporter before exiting


def run(task: TrainingTask, events_file: Path, rank: int) -> dict:
    """Trains; returns the result document (never raises for a failed run)."""
    try:
        from services.trainer.spec import TrainConfig
        from services.trainer.speed import SpeedOptions, apply_threads
        from services.trainer.training import fine_tune

        # Every CPU this process is given, shared with no data-loading workers.
        apply_threads(SpeedOptions.from_env())

        device = task.device
        local_rank = os.environ.get("LOCAL_RANK")
        if local_rank is not None and device.startswith("cuda"):
            device = f"cuda:{local_rank}"  # one GPU per process under accelerate
        with open(events_file, "a") as events:

            def write(line: dict) -> None:
                if rank == 0:
                    events.write(json.dumps(line) + "\n")
                    events.flush()

            def on_progress(step: int, total: int, metrics: dict) -> None:
                write({"step": step, "total": total, "metrics": metrics})

            def on_resume(step: int) -> None:
                write({"resumed_from_step": step})

            outcome = fine_tune(
                Path(task.base_dir),
                Path(task.dataset_file),
                Path(task.out_dir),
                TrainConfig(**task.config),
                device=device,
                on_progress=on_progress,
                should_stop=lambda: False,  # the parent stops us with signals
                checkpoint_dir=Path(task.checkpoint_dir),
                on_resume=on_resume,
            )
        return {"ok": True, "outcome": asdict(outcome)}
    except LorafleetError as exc:
        return _error(type(exc).__name__, exc.code, exc.message, exc.field)
    except BaseException as exc:  # noqa: BLE001 - the result must say what happened
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}"
        if _is_oom(exc) or _near_limit(task.memory_limit_mb):
            return {
                **_error("ResourceExhausted", "RESOURCE_EXHAUSTED", message),
                "oom": True,
            }
        return _error("crash", "INTERNAL", message)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, OSError, ImportError)) and any(
        marker in text for marker in OOM_TEXT
    )


def _near_limit(limit_mb: int) -> bool:
    """True when this process's peak virtual size came close to its limit."""
    if limit_mb <= 0:
        return False
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("VmPeak:"):
            peak = int(line.split()[1]) * 1024
            return peak >= limit_mb * 1024 * 1024 - NEAR_LIMIT_BYTES
    return False


def _error(cls: str, code: str, message: str, field: str | None = None) -> dict:
    return {
        "ok": False,
        "error": {"class": cls, "code": code, "message": message, "field": field},
    }


def limit_memory(limit_mb: int, device: str) -> None:
    """Caps this process's memory; going over fails allocations (MemoryError).

    On CPU the whole address space is capped (RLIMIT_AS). CUDA reserves far
    more virtual address space than it uses, so on a GPU the cap applies to the
    process's data segment (RLIMIT_DATA: heap and private writable mappings).
    """
    kind = resource.RLIMIT_AS if device == "cpu" else resource.RLIMIT_DATA
    limit = limit_mb * 1024 * 1024
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(kind, (limit, hard))


def watch_parent() -> None:
    """Kills this process group when the parent's end of our stdin closes.

    The parent never writes to the pipe; EOF means it exited or was killed, and
    an orphaned training must not keep writing checkpoints a new trainer
    replica is about to resume from.
    """

    def wait_for_eof() -> None:
        # The raw fd, not sys.stdin: a daemon thread blocked inside a buffered
        # reader aborts the interpreter at exit.
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=wait_for_eof, name="watch-parent", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
