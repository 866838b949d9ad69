"""Runs one training in a child process, so an OOM or a crash fails the job only.

The parent writes the task as JSON into a private run folder and starts
`python -m services.trainer.child task.json` in its own process group (under
`accelerate launch` when the job asks for more than one GPU). The child appends
progress events to `events.jsonl` there and writes `result.json` atomically at
the end; its stdout and stderr go to `child.log`, of which only a bounded tail
is ever read back for error messages. The parent relays events, polls
`should_stop` and, on cancel, sends SIGTERM to the whole group, then SIGKILL
after a grace period. The child kills itself when the parent dies (it watches
its stdin pipe), so a restarted trainer never races an orphan for the
checkpoints it resumes from.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from services.common import errors
from services.common.errors import Cancelled, Internal, ResourceExhausted
from services.common.telemetry import TRACEPARENT_ENV, current_traceparent
from services.trainer.training import TrainingOutcome

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.1
GRACE_S = 10.0
TAIL_BYTES = 8192
# Set for the child: exit when the parent's end of stdin closes.
WATCH_PARENT_ENV = "LORAFLEET_WATCH_PARENT"
OOM_MARKERS = (
    "MemoryError",
    "OutOfMemoryError",
    "out of memory",
    "Cannot allocate memory",
    "can't allocate memory",
    "failed to map segment",
    "bad_alloc",  # C++ allocation failure, then abort()
    "Memory allocation still failed",  # OpenBLAS, then exit(1)
    "pthread_create failed",  # no address space left for a thread stack
    "SIGKILL",
)


@dataclass
class TrainingTask:
    """Everything a training child needs; JSON-serialisable."""

    job_id: str
    base_dir: str
    dataset_file: str
    out_dir: str  # final adapter written here
    checkpoint_dir: str  # per job; resumes from the newest checkpoint in it
    config: dict  # TrainConfig.as_dict()
    device: str
    memory_limit_mb: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainingTask:
        return cls(**json.loads(text))


ProgressFn = Callable[[int, int, dict[str, float]], None]
ResumeFn = Callable[[int], None]


def run_training(
    task: TrainingTask,
    on_progress: ProgressFn,
    should_stop: Callable[[], bool],
    *,
    on_resume: ResumeFn | None = None,
    grace_s: float = GRACE_S,
) -> TrainingOutcome:
    """Trains in a child process; returns its outcome or raises a domain error.

    Cancelled when `should_stop` turned true (the child is gone by then);
    ResourceExhausted with a hint when the child ran out of memory; the child's
    own domain errors (InvalidArgument, ...) as the same class and message;
    Internal with the tail of the child's output for any other crash.
    `on_resume(step)` is called as soon as the child resumes from a checkpoint.
    The child continues the caller's trace (TRACEPARENT), so its log lines
    carry the job's trace id.
    """
    run_dir = Path(tempfile.mkdtemp(prefix=f"lorafleet-run-{_safe(task.job_id)}-"))
    try:
        task_file = run_dir / "task.json"
        task_file.write_text(task.to_json())
        argv = command_for(task, task_file)
        log.info("training %s: %s", task.job_id, " ".join(argv))
        with open(run_dir / "child.log", "wb") as output:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=_child_env(),
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        events = _EventReader(run_dir / "events.jsonl", on_resume)
        cancelled = False
        try:
            while proc.poll() is None:
                events.relay(on_progress)
                if should_stop():
                    cancelled = True
                    _terminate(proc, grace_s)
                    break
                time.sleep(POLL_S)
            if not cancelled:
                events.relay(on_progress)
        except BaseException:
            _terminate(proc, grace_s)
            raise
        finally:
            _kill_group(proc.pid, signal.SIGKILL)  # stragglers of a launcher
            if proc.stdin:
                proc.stdin.close()
        if cancelled:
            raise Cancelled("training was cancelled")
        return _outcome(task, proc.returncode, run_dir)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def command_for(task: TrainingTask, task_file: Path) -> list[str]:
    """The child's argv: plain python, or `accelerate launch` for num_gpus > 1."""
    if int(task.config.get("num_gpus", 0)) > 1:
        from services.trainer import launch

        gpu_memory, bf16_gpu = gpu_facts()
        plan = launch.plan_launch(
            Path(task.base_dir),
            task.config,
            gpu_memory_bytes=gpu_memory,
            bf16_gpu=bf16_gpu,
        )
        return launch.accelerate_command(task_file, plan)
    return [sys.executable, "-m", "services.trainer.child", str(task_file)]


def gpu_facts() -> tuple[int, bool]:
    """(memory of one GPU in bytes, whether it does bf16) of this replica."""
    import torch

    return (
        torch.cuda.get_device_properties(0).total_memory,
        torch.cuda.is_bf16_supported(),
    )


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    traceparent = current_traceparent()
    if traceparent:
        env[TRACEPARENT_ENV] = traceparent
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    env[WATCH_PARENT_ENV] = "1"
    return env


class _EventReader:
    """Follows the child's events.jsonl, handing on complete lines only."""

    def __init__(self, path: Path, on_resume: ResumeFn | None = None) -> None:
        self._path = path
        self._on_resume = on_resume
        self._offset = 0
        self._partial = b""

    def relay(self, on_progress: ProgressFn) -> None:
        try:
            with open(self._path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            if "resumed_from_step" in event:
                if self._on_resume is not None:
                    self._on_resume(int(event["resumed_from_step"]))
                continue
            on_progress(event["step"], event["total"], event["metrics"])


def _terminate(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM to the child's group, SIGKILL after `grace_s`; reaps the child."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(task: TrainingTask, returncode: int, run_dir: Path) -> TrainingOutcome:
    try:
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        result = None
    tail = _tail(run_dir / "child.log")
    if result:  # the child got to report: success or a classified failure
        if result.get("ok"):
            if returncode:
                log.warning("training child exited %s after its result", returncode)
            return TrainingOutcome(**result["outcome"])
        error = result["error"]
        if result.get("oom"):
            raise oom_error(task, error["message"])
        if error.get("class") != "crash":
            raise _domain_error(error)
        raise Internal(f"training crashed ({error['message']}); last output:\n{tail}")
    # Died without a word: killed, aborted (C++ bad_alloc) or a native crash.
    if any(marker in tail for marker in OOM_MARKERS):
        raise oom_error(task, _last_line_with(tail, OOM_MARKERS))
    if returncode == -signal.SIGKILL:
        raise oom_error(
            task,
            "the training process was killed (SIGKILL), most likely by the "
            "kernel's out-of-memory killer",
        )
    how = (
        f"died of {signal.Signals(-returncode).name}"
        if returncode < 0
        else f"exited with status {returncode}"
    )
    raise Internal(f"training process {how}; last output:\n{tail}")


def _domain_error(error: dict) -> errors.LorafleetError:
    cls = getattr(errors, error.get("class", ""), None)
    if isinstance(cls, type) and issubclass(cls, errors.LorafleetError):
        return cls(error["message"], field=error.get("field"))
    exc = errors.from_code(error.get("code", "INTERNAL"), error["message"])
    exc.field = error.get("field")
    return exc


def oom_error(task: TrainingTask, detail: str) -> ResourceExhausted:
    """The out-of-memory failure, with the changes that make a run fit."""
    cfg = task.config
    fixes = []
    batch, accumulation = (
        int(cfg.get("batch_size", 8)),
        int(cfg.get("gradient_accumulation_steps", 1)),
    )
    if batch > 1:
        fixes.append(
            f"lower config.batch_size ({batch} -> {max(batch // 2, 1)}) and raise "
            f"config.gradient_accumulation_steps ({accumulation} -> "
            f"{accumulation * 2}) to keep the effective batch size"
        )
    if not cfg.get("gradient_checkpointing"):
        fixes.append("set config.gradient_checkpointing (recomputes activations)")
    if cfg.get("method") != "qlora":
        fixes.append("train with method QLORA (loads the base in 4-bit)")
    fixes.append(
        f"shorten config.max_seq_length (now {cfg.get('max_seq_length', 512)})"
    )
    limit = ""
    if task.memory_limit_mb:
        limit = (
            f" under the trainer's {task.memory_limit_mb} MiB limit per training "
            "process"
        )
        fixes.append("or give training processes more (trainer_memory_limit_mb)")
    return ResourceExhausted(
        f"training ran out of memory{limit}: {detail.strip().rstrip('.')}. To fit, "
        + "; ".join(fixes)
        + "."
    )


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return text if size <= TAIL_BYTES else "…" + text.split("\n", 1)[-1]


def _last_line_with(text: str, markers: tuple[str, ...]) -> str:
    for line in reversed(text.splitlines()):
        if any(marker in line for marker in markers):
            return line.strip()
    return "out of memory"


def _safe(job_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", job_id)[:64]
