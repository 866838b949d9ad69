"""Trainer throughput: lorafleet's training job vs a plain PEFT + Trainer script.

All runs train SmolLM2-135M-Instruct with the same rank, sequence length, batch
and steps on the same seeded train split of the bundled demo dataset, each in
its own subprocess so peak RSS is per run. lorafleet runs exactly as a trainer
job does (`runner.run_training`: a training child process), once as configured
by default and once with `group_by_length` and once with `packing`. Afterwards
every run's adapter is scored the same way: mean loss on the answer tokens of
the held-out rows, so the final losses compare like for like (each run's own
training loss does not: lorafleet's is on answer tokens, the baseline's on
every token). Usage: python bench/train_bench.py --out FILE [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def run_lorafleet(args, **options) -> dict:
    """The trainer service's own code path: a training job's child process."""
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


def run_baseline(args) -> dict:
    """What one writes from the PEFT README: chat template, pad to max length."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.05,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    _, train_rows, _ = _split(args)
    rows = [row.data for row in train_rows]
    train = []
    for r in rows:
        user = r["instruction"] + ("\n\n" + r["input"] if r.get("input") else "")
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": r["output"]},
        ]
        text = tok.apply_chat_template(messages, tokenize=False)
        enc = tok(text, truncation=True, max_length=args.seq, padding="max_length")
        train.append(dict(enc))
    started = time.time()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                output_dir=out,
                per_device_train_batch_size=args.batch,
                max_steps=args.steps,
                learning_rate=args.lr,
                logging_steps=1,
                save_strategy="no",
                report_to="none",
                use_cpu=True,
                seed=args.seed,
                disable_tqdm=True,
                include_num_input_tokens_seen="non_padding",
            ),
            train_dataset=train,
            data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        )
        trainer.train()
    seconds = time.time() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens": float(trainer.state.num_input_tokens_seen),
        "seconds": seconds,
        "train_loss_own": float(losses[-1]),
        "final_loss": held_out_answer_loss(model, tok, args),
    }


def worker(args) -> None:
    torch_threads = os.environ.get("BENCH_THREADS")
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    runs = {
        "baseline": run_baseline,
        "lorafleet": run_lorafleet,
        "lorafleet_grouped": lambda a: run_lorafleet(a, group_by_length=True),
        "lorafleet_packed": lambda a: run_lorafleet(a, packing=True),
    }
    result = runs[args.worker](args)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--worker",
        choices=["baseline", "lorafleet", "lorafleet_grouped", "lorafleet_packed"],
        help=argparse.SUPPRESS,
    )
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    from services.demo.orders import DATASET_PATH

    common = [
        f"--{k}={getattr(args, k)}" for k in ("steps", "batch", "seq", "rank", "lr")
    ]
    common += [
        f"--seed={args.seed}",
        f"--model={model_dir()}",
        f"--data={DATASET_PATH}",
    ]
    results = {}
    for name in ("baseline", "lorafleet", "lorafleet_grouped", "lorafleet_packed"):
        result_file = CACHE / f"{name}.json"
        subprocess.run(
            [sys.executable, __file__, f"--worker={name}", f"--result={result_file}"]
            + common,
            check=True,
            cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
        )
        results[name] = json.loads(result_file.read_text())
    lf, base = results["lorafleet"], results["baseline"]
    report = {
        "settings": {k: getattr(args, k) for k in ("steps", "batch", "seq", "rank")},
        **results,
        "tokens_per_s_ratio": lf["tokens_per_s"] / base["tokens_per_s"],
        "rss_ratio": lf["peak_rss_mib"] / base["peak_rss_mib"],
        "lorafleet_final_loss": lf["final_loss"],
        "baseline_final_loss": base["final_loss"],
        "variants": {
            name: {
                "tokens_per_s_ratio": r["tokens_per_s"] / base["tokens_per_s"],
                "rss_ratio": r["peak_rss_mib"] / base["peak_rss_mib"],
                "final_loss": r["final_loss"],
            }
            for name, r in results.items()
            if name != "baseline"
        },
        "note": "final_loss: answer-token loss on the same held-out rows for every "
        "run; train_loss_own: each run's last logged training loss (not comparable)",
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
