"""Trainer throughput: lorafleet's training job vs a well-written plain PEFT loop.

Every run trains SmolLM2-135M-Instruct (r=16 on all linear layers, lr 2e-4,
fp32 on CPU; 20 steps of 8 rows by default) on the same seeded train split of
the bundled demo dataset, tokenised the same way (chat template, loss on the
answer tokens only), each in its own subprocess so peak RSS is per run.

- `loop`: the baseline, bench/peft_loop.py: each batch padded to its longest
  row. `loop_max_length` pads every row to --seq (the old baseline; a second,
  labelled row, not what the ratios use). `loop_bf16` (bf16 autocast) and
  `loop_compile` (torch.compile) measure those two on this machine; they run
  only when --runs names them.
- `lorafleet`: the trainer service's own code path (`runner.run_training`: a
  training child process) with default settings (packing_mode auto: this
  model keeps packed examples apart, so it packs); the `lorafleet_*` runs turn
  one lever off (`no_labelled_logits`, `no_saved_mask_dropout`,
  `no_affinity_threads`, `no_native_dropout`, `all_levers_off`, `no_packing`)
  or, without packing, group rows by length (`grouped`), for each lever's own
  gain.

Tokens are counted without padding for every run. Afterwards each run's
adapter is scored the same way: mean loss on the answer tokens of the held-out
rows, so speed never comes from learning less. The report's ratios are
lorafleet (default settings) over `loop`, each run's fastest of --repeats
round-robin tries (every try is in the report). Usage:
python bench/train_bench.py --out FILE [--steps N] [--repeats N] [--runs a,b,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from peft_loop import LoopOptions, train_loop
from smollm2 import CACHE, model_dir

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EVAL_FRACTION = 0.1


def _split(args):
    """The seeded train/held-out split every run uses."""
    from services.common import datasets

    task, rows = datasets.load_dataset(Path(args.data), "instruction")
    train, held_out = datasets.split_rows(rows, EVAL_FRACTION, args.seed)
    return task, train, held_out


def held_out_answer_loss(model, tokenizer, args) -> float:
    """Mean loss over the answer tokens of the held-out rows (same for every run)."""
    import torch

    from services.common import datasets

    task, _, held_out = _split(args)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for row in held_out:
            f = datasets.tokenize_for_training(
                tokenizer, datasets.to_example(row, task), args.seq
            )
            ids = torch.tensor([f["input_ids"]])
            labels = torch.tensor([f["labels"]])
            logits = model(input_ids=ids).logits[:, :-1]
            target = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                target.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(loss)
            count += int((target != -100).sum())
    return total / max(count, 1)


def run_lorafleet(args, speed: str = "", **options) -> dict:
    """The trainer service's own code path: a training job's child process.

    `speed` turns levers off in the child (LORAFLEET_TRAIN_SPEED); `options`
    are TrainConfig fields on top of the bench's settings.
    """
    from services.trainer.speed import SPEED_ENV

    os.environ[SPEED_ENV] = speed
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.trainer.runner import TrainingTask, run_training
    from services.trainer.spec import TrainConfig

    cfg = TrainConfig(
        rank=args.rank,
        max_steps=args.steps,
        batch_size=args.batch,
        max_seq_length=args.seq,
        eval_fraction=EVAL_FRACTION,
        seed=args.seed,
        task_type="instruction",
        learning_rate=args.lr,
        target_modules=TARGETS,
        checkpoint_steps=10**6,  # the baseline saves none either
        **options,
    )
    with tempfile.TemporaryDirectory() as scratch:
        task = TrainingTask(
            job_id="bench",
            base_dir=args.model,
            dataset_file=args.data,
            out_dir=str(Path(scratch) / "adapter"),
            checkpoint_dir=str(Path(scratch) / "checkpoints"),
            config=cfg.as_dict(),
            device="cpu",
        )
        m = run_training(task, lambda *_: None, lambda: False)
        tok = AutoTokenizer.from_pretrained(args.model)
        base = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, task.out_dir)
        answer_loss = held_out_answer_loss(model, tok, args)
    return {
        "tokens": m.metrics["train_tokens"],
        "seconds": m.metrics["train_seconds"],
        "train_loss_own": m.metrics["final_loss"],
        "final_loss": answer_loss,
    }


def run_loop(args, **options) -> dict:
    """The baseline loop (bench/peft_loop.py) on the same features as lorafleet."""
    from services.common import datasets
    from services.common.modeling import load_tokenizer

    task, train_rows, _ = _split(args)
    tok = load_tokenizer(Path(args.model))
    features = []
    for row in train_rows:
        f = datasets.tokenize_for_training(
            tok, datasets.to_example(row, task), args.seq
        )
        if any(label != -100 for label in f["labels"]):
            features.append(f)
    model, result = train_loop(
        args.model,
        features,
        steps=args.steps,
        batch=args.batch,
        seq=args.seq,
        rank=args.rank,
        lr=args.lr,
        seed=args.seed,
        targets=TARGETS,
        options=LoopOptions(**options),
    )
    result["final_loss"] = held_out_answer_loss(model, tok, args)
    return result


RUNS = {
    "loop": lambda a: run_loop(a),
    "loop_max_length": lambda a: run_loop(a, pad_to_max_length=True),
    "lorafleet": lambda a: run_lorafleet(a),
    "lorafleet_no_labelled_logits": lambda a: run_lorafleet(
        a, speed="labelled_logits=off"
    ),
    "lorafleet_no_saved_mask_dropout": lambda a: run_lorafleet(
        a, speed="saved_mask_dropout=off"
    ),
    "lorafleet_no_affinity_threads": lambda a: run_lorafleet(
        a, speed="affinity_threads=off"
    ),
    "lorafleet_no_native_dropout": lambda a: run_lorafleet(
        a, speed="native_dropout=off"
    ),
    "lorafleet_all_levers_off": lambda a: run_lorafleet(
        a,
        speed="labelled_logits=off,saved_mask_dropout=off,affinity_threads=off,"
        "native_dropout=off",
    ),
    "lorafleet_no_packing": lambda a: run_lorafleet(a, packing_mode="off"),
    "lorafleet_grouped": lambda a: run_lorafleet(
        a, group_by_length=True, packing_mode="off"
    ),
    "loop_bf16": lambda a: run_loop(a, bf16_autocast=True),
    "loop_compile": lambda a: run_loop(a, compile=True),
}
# Measurements that can take an hour on some CPUs (bf16 autocast where the
# CPU has no bf16 instructions; torch.compile's compile time): ask for them.
OPT_IN_RUNS = ("loop_bf16", "loop_compile")
# Lever name -> (run with it on, run with it off).
LEVERS = {
    "labelled_logits": ("lorafleet", "lorafleet_no_labelled_logits"),
    "saved_mask_dropout": ("lorafleet", "lorafleet_no_saved_mask_dropout"),
    "affinity_threads": ("lorafleet", "lorafleet_no_affinity_threads"),
    "native_dropout": ("lorafleet", "lorafleet_no_native_dropout"),
    "all_levers": ("lorafleet", "lorafleet_all_levers_off"),
    "packing (auto, the default)": ("lorafleet", "lorafleet_no_packing"),
    "group_by_length (without packing)": ("lorafleet_grouped", "lorafleet_no_packing"),
    "bf16_autocast (loop)": ("loop_bf16", "loop"),
    "torch_compile (loop)": ("loop_compile", "loop"),
    "dynamic_padding (loop)": ("loop", "loop_max_length"),
}


def worker(args) -> None:
    result = RUNS[args.worker](args)
    result["tokens_per_s"] = result["tokens"] / max(result["seconds"], 1e-9)
    # ru_maxrss is KiB on Linux. The training of a lorafleet run happens in its
    # child process, so the peak is the larger of this process and its child.
    result["peak_rss_mib"] = (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )
    Path(args.result).write_text(json.dumps(result))


def compile_payoff(compiled: dict, plain: dict) -> dict:
    """Does torch.compile pay within the run? Compile time vs per-step saving."""
    steps_c, steps_p = compiled["step_seconds"], plain["step_seconds"]
    warm_c = sorted(steps_c[1:])[len(steps_c[1:]) // 2] if len(steps_c) > 1 else 0.0
    warm_p = sorted(steps_p[1:])[len(steps_p[1:]) // 2] if len(steps_p) > 1 else 0.0
    saving = warm_p - warm_c
    first_extra = steps_c[0] - steps_p[0]
    return {
        "first_step_extra_s": first_extra,
        "median_step_s_compiled": warm_c,
        "median_step_s_plain": warm_p,
        "break_even_steps": first_extra / saving if saving > 0 else None,
        "total_s_compiled": compiled["seconds"],
        "total_s_plain": plain["seconds"],
    }


def report(args, results: dict) -> dict:
    def ratio(a: str, b: str, key: str) -> float | None:
        if a in results and b in results:
            return results[a][key] / results[b][key]
        return None

    out: dict = {
        "settings": {
            k: getattr(args, k) for k in ("steps", "batch", "seq", "rank", "lr")
        },
        "baseline": "loop: plain PEFT loop, each batch padded to its longest row",
        "tokens_per_s_ratio": ratio("lorafleet", "loop", "tokens_per_s"),
        "rss_ratio": ratio("lorafleet", "loop", "peak_rss_mib"),
        "lorafleet_final_loss": results.get("lorafleet", {}).get("final_loss"),
        "baseline_final_loss": results.get("loop", {}).get("final_loss"),
        # Same init, batches and dropout masks: only float summation order
        # (the head lever's chunked loss) separates the two runs' losses.
        "final_loss_relative_diff": ratio("lorafleet", "loop", "final_loss") - 1
        if "lorafleet" in results and "loop" in results
        else None,
        "vs_max_length_loop": {
            "tokens_per_s_ratio": ratio("lorafleet", "loop_max_length", "tokens_per_s"),
            "rss_ratio": ratio("lorafleet", "loop_max_length", "peak_rss_mib"),
        },
        "levers": {
            name: {
                "tokens_per_s_gain": ratio(on, off, "tokens_per_s"),
                "rss_ratio": ratio(on, off, "peak_rss_mib"),
                "final_loss_on": results[on]["final_loss"],
                "final_loss_off": results[off]["final_loss"],
            }
            for name, (on, off) in LEVERS.items()
            if on in results and off in results
        },
        "runs": {
            name: {k: v for k, v in r.items() if k != "step_seconds"}
            for name, r in results.items()
        },
        "note": "tokens: non-padding tokens; final_loss: answer-token loss on the "
        "same held-out rows for every run; train_loss_own: each run's last "
        "training loss (one batch, not comparable)",
    }
    if "loop_compile" in results and "loop" in results:
        out["torch_compile"] = compile_payoff(results["loop_compile"], results["loop"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="run every run this many times, round-robin, and compare each "
        "run's fastest (on a shared machine the others lost time to other "
        "work); every repeat's numbers are in the report",
    )
    p.add_argument(
        "--runs",
        default=",".join(r for r in RUNS if r not in OPT_IN_RUNS),
        help="comma-separated runs (default: all but "
        + ", ".join(OPT_IN_RUNS)
        + "): "
        + ", ".join(RUNS),
    )
    p.add_argument("--worker", choices=list(RUNS), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    runs = [r for r in args.runs.split(",") if r]
    unknown = set(runs) - set(RUNS)
    if unknown:
        p.error(f"unknown runs {sorted(unknown)}; choose from {', '.join(RUNS)}")

    from services.demo.orders import DATASET_PATH

    common = [
        f"--{k}={getattr(args, k)}" for k in ("steps", "batch", "seq", "rank", "lr")
    ]
    common += [
        f"--seed={args.seed}",
        f"--model={model_dir()}",
        f"--data={DATASET_PATH}",
    ]
    results: dict = {}
    repeats: dict[str, list[dict]] = {}
    failures: dict = {}
    for attempt in range(max(args.repeats, 1)):
        for name in runs:
            if name in failures:
                continue
            result_file = CACHE / f"{name}.json"
            result_file.unlink(missing_ok=True)
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    f"--worker={name}",
                    f"--result={result_file}",
                ]
                + common,
                cwd=ROOT,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
            )
            if done.returncode != 0 or not result_file.is_file():
                # A measurement run (torch.compile, say) may fail on some setups:
                # say so in the report instead of losing the other runs.
                failures[name] = f"exit status {done.returncode}"
                print(f"{name}: failed ({failures[name]})", flush=True)
                continue
            result = json.loads(result_file.read_text())
            repeats.setdefault(name, []).append(result)
            print(
                f"{name} (#{attempt + 1}): {result['tokens_per_s']:.1f} tokens/s, "
                f"{result['peak_rss_mib']:.0f} MiB, "
                f"held-out loss {result['final_loss']:.4f}",
                flush=True,
            )
    for name, tries in repeats.items():
        # The same seed, data and config train the same adapter each time:
        # only the timing differs, and the fastest lost least to other work.
        results[name] = {
            **max(tries, key=lambda r: r["tokens_per_s"]),
            "tokens_per_s_repeats": [r["tokens_per_s"] for r in tries],
        }
    summary = report(args, results)
    if failures:
        summary["failed_runs"] = failures
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
