"""lorafleet's streamed LoRA merge vs PEFT merge_and_unload + save_pretrained.

Each side runs in its own process on SmolLM2-135M-Instruct with the same
adapter (r=16 on every linear layer, seeded non-zero B); we report wall time,
peak RSS (the child's own VmHWM), the max abs difference between the two
outputs, and ratios (lorafleet / PEFT). lorafleet's merge hashes and writes
on two threads of its own and runs torch on the cores left (at least one);
PEFT runs both with torch's default threads and with one, and the ratios are
against whichever was faster. `--profile` adds a run timed phase by phase;
`--synthetic` adds lorafleet-only runs on random fp16 models of growing size
to show memory stays flat.

    python bench/merge_bench.py --out bench/results/merge.json [--profile]
        [--synthetic 0.25,1.0]

Each side runs --repeats times (alternating which goes first) and medians are
reported, with every run's numbers alongside: on a shared machine a single
0.5 GB write can take anywhere from 1 to 10 s depending on other writers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smollm2 import CACHE, model_dir

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def adapter_dir(base: Path) -> Path:
    """A LoRA adapter with non-zero B (a fresh PEFT adapter would merge to a no-op)."""
    out = CACHE / "smollm2-merge-adapter"
    if (out / "adapter_model.safetensors").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS)
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    model.save_pretrained(str(out))
    return out


def child_lorafleet(base: str, adapter: str, out: str) -> dict:
    from services.merger.lora_merge import merge_adapter

    started, cpu = time.perf_counter(), time.process_time()
    stats = merge_adapter(Path(adapter), Path(base), Path(out))
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "tensors_merged": stats.tensors_merged,
    }


def child_profile(base: str, adapter: str, out: str) -> dict:
    """child_lorafleet with seconds per phase, thread by thread (inclusive).

    Main thread: reads, merges (read + arithmetic + checks + hand-over), copies
    of untouched tensors, waits to hand over. Writer lanes: sha256, write(),
    the kernel writeback started early, and the fsync that ends each file.
    Wrapping costs a little, so `seconds` here runs slightly above the plain run.
    """
    import os
    from collections import defaultdict

    from services.merger import lora_merge, lora_stream, safetensors_io, write_lanes

    phases: dict[str, float] = defaultdict(float)

    def timed(owner, attr: str, label: str) -> None:
        real = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                phases[label] += time.perf_counter() - started

        setattr(owner, attr, wrapper)

    timed(safetensors_io.TensorReader, "read_into", "main: read (pread)")
    timed(lora_stream.TensorStream, "merge", "main: merge adapted weight")
    timed(lora_stream.TensorStream, "copy", "main: copy untouched tensor")
    timed(lora_merge, "all_finite", "main: NaN/Inf checks")
    timed(write_lanes.HashedWriter, "put", "main: hand-over (incl. waits)")
    timed(write_lanes.HashedWriter, "_hash_item", "hash lane: sha256")
    timed(write_lanes.HashedWriter, "_write_item", "write lane: write+fsync")
    timed(os, "fsync", "write lane: fsync")
    if write_lanes._START_WRITEBACK is not None:
        timed(write_lanes, "_START_WRITEBACK", "write lane: start writeback")
    result = child_lorafleet(base, adapter, out)
    return {**result, "phases_s": {k: round(v, 4) for k, v in sorted(phases.items())}}


def child_peft(base: str, adapter: str, out: str) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    started, cpu = time.perf_counter(), time.process_time()
    model = AutoModelForCausalLM.from_pretrained(base)
    model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.save_pretrained(out)
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
    }


def peak_rss_mib() -> float:
    """This process's RSS high-water mark.

    VmHWM belongs to the address space created at exec; ru_maxrss would also
    count the parent's memory that the forked child briefly shared.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(kind: str, *args: str) -> dict:
    """Runs one side in a fresh interpreter; it reports its own peak RSS."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _tensor_files(model: Path) -> dict[str, Path]:
    """Tensor name -> file, for single-file and sharded (indexed) outputs."""
    index = model / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: model / file for name, file in weight_map.items()}
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), "pt") as f:
        return {name: model / "model.safetensors" for name in f.keys()}


def summarize(runs: list[dict]) -> dict:
    """Median wall time, CPU time and peak RSS over repeated runs, every run kept."""
    return {
        **runs[-1],
        **{
            key: statistics.median(r[key] for r in runs)
            for key in ("seconds", "cpu_seconds", "peak_rss_mib")
        },
        "all_seconds": [r["seconds"] for r in runs],
        "all_cpu_seconds": [r["cpu_seconds"] for r in runs],
        "all_peak_rss_mib": [r["peak_rss_mib"] for r in runs],
    }


def max_abs_diff(a: Path, b: Path) -> float:
    from safetensors import safe_open

    worst = 0.0
    files_a, files_b = _tensor_files(a), _tensor_files(b)
    for key in sorted(set(files_a) & set(files_b)):
        with (
            safe_open(str(files_a[key]), "pt") as fa,
            safe_open(str(files_b[key]), "pt") as fb,
        ):
            diff = (fa.get_tensor(key).float() - fb.get_tensor(key).float()).abs()
        worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
    return worst


def synthetic_model(params_billions: float, root: Path) -> tuple[Path, Path]:
    """A random fp16 llama-shaped model of about N parameters, plus an adapter."""
    import torch
    from safetensors.torch import save_file

    hidden = 2048
    per_layer = 4 * hidden * hidden + 3 * hidden * (hidden * 4)
    layers = max(1, int(params_billions * 1e9 // per_layer))
    base, adapter = (
        root / f"base-{params_billions}",
        root / f"adapter-{params_billions}",
    )
    base.mkdir(parents=True)
    adapter.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    weights, lora = {}, {}
    shapes = {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, hidden),
        "self_attn.v_proj": (hidden, hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (4 * hidden, hidden),
        "mlp.up_proj": (4 * hidden, hidden),
        "mlp.down_proj": (hidden, 4 * hidden),
    }
    for i in range(layers):
        for mod, (o, n) in shapes.items():
            key = f"model.layers.{i}.{mod}"
            weights[f"{key}.weight"] = torch.randn(o, n, generator=gen).half()
            if mod == "self_attn.q_proj":
                lora[f"base_model.model.{key}.lora_A.weight"] = (
                    torch.randn(16, n) * 0.01
                )
                lora[f"base_model.model.{key}.lora_B.weight"] = (
                    torch.randn(o, 16) * 0.01
                )
        if len(weights) >= 7 * 4 or i == layers - 1:  # shard every 4 layers
            save_file(
                weights,
                str(base / f"model-{i:05d}.safetensors"),
                metadata={"format": "pt"},
            )
            weights = {}
    (base / "config.json").write_text(
        json.dumps(
            {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": hidden}
        )
    )
    save_file(
        lora, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"}
    )
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "r": 16,
                "lora_alpha": 32,
                "target_modules": ["q_proj"],
            }
        )
    )
    return base, adapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="where to write the JSON report")
    parser.add_argument(
        "--synthetic",
        default="",
        help="comma-separated model sizes in billions of parameters",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each side (alternating); medians are reported",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add one more lorafleet run with seconds per phase (read, merge, "
        "hash, write, fsync) to the report",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--make-synthetic", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--diff", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.diff:
        print(max_abs_diff(Path(args.diff[0]), Path(args.diff[1])))
        return
    if args.make_synthetic:
        synthetic_model(float(args.make_synthetic[0]), Path(args.make_synthetic[1]))
        return
    if args.child:
        kind, base, adapter, out = args.child
        if kind == "peft-1thread":
            import torch

            torch.set_num_threads(1)
        child = {"lorafleet": child_lorafleet, "lorafleet-profile": child_profile}
        result = child.get(kind, child_peft)(base, adapter, out)
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return

    if not args.out:
        parser.error("--out is required")
    base = model_dir()
    adapter = adapter_dir(base)
    work = Path(tempfile.mkdtemp(prefix="merge-bench-"))
    try:
        # PEFT as users run it (torch's default threads) and with one thread:
        # on a busy machine idle OpenMP threads spin, and either can be the
        # faster; ratios are against the faster.
        kinds = ["lorafleet", "peft", "peft-1thread"]
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for i in range(args.repeats):
            # rotate who goes first: each writes ~0.5 GB to the same disk, and
            # the one that follows can be slowed by the other's writeback
            for kind in kinds[i % 3 :] + kinds[: i % 3]:
                shutil.rmtree(work / kind, ignore_errors=True)
                runs[kind].append(
                    run_child(kind, str(base), str(adapter), str(work / kind))
                )
        ours = summarize(runs["lorafleet"])
        peft_default = summarize(runs["peft"])
        peft_single = summarize(runs["peft-1thread"])
        peft = min(peft_default, peft_single, key=lambda r: r["seconds"])
        report = {
            "model": "SmolLM2-135M-Instruct (fp32)",
            "adapter": "r=16, alpha=32, all linear layers",
            "repeats": args.repeats,
            "lorafleet": ours,
            "peft": peft_default,
            "peft_one_thread": peft_single,
            "rss_ratio": ours["peak_rss_mib"]
            / min(peft_default["peak_rss_mib"], peft_single["peak_rss_mib"]),
            "time_ratio": ours["seconds"] / peft["seconds"],
            # CPU time (user + system, every thread, imports excluded like the
            # wall time) varies far less than wall time on a shared machine:
            # what each side costs when cores are scarce.
            "cpu_ratio": ours["cpu_seconds"] / peft["cpu_seconds"],
            # In a child too: mapping both outputs here would inflate this
            # process, and the children forked from it afterwards.
            "max_abs_diff": float(
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--diff",
                        str(work / "lorafleet"),
                        str(work / "peft"),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            ),
        }
        if args.profile:
            report["lorafleet_profile"] = run_child(
                "lorafleet-profile", str(base), str(adapter), str(work / "profile")
            )
        synthetic = []
        for size in [float(s) for s in args.synthetic.split(",") if s]:
            # Built in its own process so this one stays small while children run.
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--make-synthetic",
                    str(size),
                    str(work / "synthetic"),
                ],
                cwd=ROOT,
                check=True,
            )
            base_s = work / "synthetic" / f"base-{size}"
            adapter_s = work / "synthetic" / f"adapter-{size}"
            on_disk = sum(f.stat().st_size for f in base_s.glob("*.safetensors"))
            run = run_child(
                "lorafleet",
                str(base_s),
                str(adapter_s),
                str(work / f"synthetic-out-{size}"),
            )
            synthetic.append(
                {"params_billions": size, "model_mib": on_disk / 2**20, **run}
            )
            shutil.rmtree(work / "synthetic")
            shutil.rmtree(work / f"synthetic-out-{size}")
        if synthetic:
            report["synthetic_lorafleet"] = synthetic
    finally:
        shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
