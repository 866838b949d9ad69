"""Quantized exports of a merged SmolLM2-135M: size and perplexity per format.

Merges the bench adapter (the one bench/merge_bench.py creates) into
SmolLM2-135M-Instruct in float32 with lorafleet's streamed merge, then runs the
merger's own export step (services.merger.quantized, the code a merge job
runs) for GGUF Q8_0, GGUF Q4_0, bitsandbytes int8 and NF4, with no quality
limit so every format is reported. For each: size on disk against the float32
safetensors, perplexity on the held-out text against the unquantized model.
Also measures what merging a QLoRA adapter costs: logits of the adapter on the
NF4-quantized base (as QLoRA trains it) against the full-precision base.

    python bench/quant_bench.py --out bench/results/quant.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.merge_bench import adapter_dir, model_dir  # noqa: E402

TARGETS = {"size_reduction": 0.70, "perplexity_change": 0.05}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="where to write the JSON report")
    parser.add_argument(
        "--formats",
        default="gguf_q8_0,gguf_q4_0,bnb_int8,bnb_nf4",
        help="comma-separated export formats",
    )
    args = parser.parse_args()

    from services.merger.gate import check_merge
    from services.merger.lora_merge import merge_adapter
    from services.merger.quantized import QuantizedExport, run_exports

    base = model_dir()
    adapter = adapter_dir(base)
    work = Path(tempfile.mkdtemp(prefix="quant-bench-"))
    try:
        merged = work / "merged"
        started = time.perf_counter()
        merge_adapter(adapter, base, merged, output_dtype="float32")
        merge_seconds = time.perf_counter() - started
        started = time.perf_counter()
        results = run_exports(
            merged,
            [
                QuantizedExport(f, max_perplexity_ratio=1e9)
                for f in args.formats.split(",")
                if f
            ],
        )
        export_seconds = time.perf_counter() - started
        qlora = check_merge(
            {
                "kind": "lora",
                "merged": str(merged),
                "base": str(base),
                "adapter": str(adapter),
                "base_quantization": "nf4",
            }
        ).checks
    finally:
        shutil.rmtree(work, ignore_errors=True)
    formats = {}
    for r in results:
        formats[r.format] = {
            "size_mib": r.size_bytes / 2**20,
            "unquantized_size_mib": r.unquantized_size_bytes / 2**20,
            "size_reduction": r.size_reduction,
            "perplexity": r.perplexity,
            "unquantized_perplexity": r.unquantized_perplexity,
            "perplexity_change": r.perplexity_change,
            "export_and_load_seconds": r.seconds,
            "meets_seed_target": r.size_reduction >= TARGETS["size_reduction"]
            and r.perplexity_change < TARGETS["perplexity_change"],
            "notes": r.notes,
        }
    report = {
        "model": "SmolLM2-135M-Instruct + r=16 adapter, merged in float32",
        "seed_target": "size_reduction >= 0.70 and perplexity_change < 0.05",
        "merge_seconds": merge_seconds,
        "exports_seconds": export_seconds,
        "formats": formats,
        "qlora_nf4_base": {
            "max_abs_logit_diff": qlora["quantized_base_max_abs_logit_diff"],
            "mean_abs_logit_diff": qlora["quantized_base_mean_abs_logit_diff"],
            "relative_logit_diff": qlora["quantized_base_relative_logit_diff"],
            "top1_agreement": qlora["quantized_base_top1_agreement"],
            "merged_vs_unmerged_relative_logit_diff": qlora["relative_logit_diff"],
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
