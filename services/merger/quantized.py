"""Quantised exports of a merged model, each measured against the unquantised one.

Formats: GGUF Q8_0 / Q4_0 (llama.cpp; written by gguf_export with the `gguf`
package) and bitsandbytes LLM.int8 / NF4 (safetensors that transformers loads
with the quantisation config; bitsandbytes runs on CPU too). Every export is
written under `quantized/<format>/` inside the merged model's directory, then
loaded back and its perplexity on a held-out text compared with the
unquantised model's; a ratio above the export's limit fails the merge job
before anything is registered. Runs in its own process
(`python -m services.merger.quantized SPEC_JSON`), like the gate, since it
needs transformers.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument, shorten

FORMATS = ("gguf_q8_0", "gguf_q4_0", "bnb_int8", "bnb_nf4")
EXPORT_DIR = "quantized"
GGUF_FILE = "model.gguf"
# Default limit on exported / unquantised perplexity of the held-out text.
DEFAULT_MAX_PERPLEXITY_RATIO = 1.25
EXPORT_TIMEOUT_S = 3600
# Held-out prose for perplexity: nothing the demo trains on, no markup.
EVAL_TEXT = """\
The river town woke slowly. Fishermen pulled their boats onto the gravel while \
the baker opened his shutters and set out the first loaves of the day. By eight \
o'clock the market square was full of voices: farmers selling apples and \
cabbages, children running between the stalls, and an old man tuning a violin \
beside the fountain.

A good recipe for bread needs only four things: flour, water, salt and yeast. \
Mix them, knead the dough for ten minutes, and let it rise in a warm place until \
it has doubled in size. Then shape the loaf, let it rise again, and bake it in a \
hot oven for about forty minutes, until the crust is brown and the bottom sounds \
hollow when you tap it.

The committee met on Tuesday to discuss the budget for next year. Most members \
agreed that the library needed new computers, but there was a long debate about \
the cost of repairing the roof. In the end they decided to ask for three quotes \
and to vote again at the next meeting in March.

Light from the Sun takes about eight minutes to reach the Earth. The planets \
closest to the Sun, Mercury and Venus, have no moons, while Jupiter and Saturn \
each have dozens. Astronomers measure distances inside the solar system in \
astronomical units, the average distance between the Earth and the Sun.

When she opened the letter, she read it twice before she understood what it \
meant. The job was hers if she wanted it, in a city she had never visited, \
starting in September. She folded the paper, put it back in the envelope and \
went outside to walk along the shore and think.
"""


@dataclass(frozen=True)
class QuantizedExport:
    """One requested export: a format and its perplexity limit."""

    format: str
    max_perplexity_ratio: float = DEFAULT_MAX_PERPLEXITY_RATIO

    def check(self) -> None:
        if self.format not in FORMATS:
            problem = (
                f"quantized export format {shorten(self.format)!r} is unknown"
                if self.format
                else "a quantized export needs a format"
            )
            raise InvalidArgument(
                f"{problem}; valid formats: " + ", ".join(f.upper() for f in FORMATS),
                field="exports.format",
            )
        ratio = self.max_perplexity_ratio
        if not (math.isfinite(ratio) and ratio >= 1.0):
            raise InvalidArgument(
                f"exports.max_perplexity_ratio must be a finite number >= 1 (the "
                f"largest allowed exported / unquantised perplexity), got {ratio}; "
                f"0 takes the default {DEFAULT_MAX_PERPLEXITY_RATIO}",
                field="exports.max_perplexity_ratio",
            )


@dataclass
class ExportResult:
    """What an export achieved, measured on the files written."""

    format: str
    path: str  # relative to the merged model's directory
    size_bytes: int
    unquantized_size_bytes: int
    size_reduction: float
    perplexity: float
    unquantized_perplexity: float
    perplexity_change: float
    max_perplexity_ratio: float
    passed: bool
    seconds: float = 0.0  # writing the export and loading it back
    notes: list[str] = field(default_factory=list)
    files: dict[str, list[Any]] = field(default_factory=dict)  # rel -> [sha, size]

    def summary(self) -> dict[str, Any]:
        """The result without file digests, for metadata and events."""
        facts = asdict(self)
        facts.pop("files")
        return facts


def check_exports(
    exports: list[QuantizedExport], model_dir: Path | None = None
) -> None:
    """Start-time checks: known formats, no duplicates, a model each can take."""
    seen: set[str] = set()
    for export in exports:
        export.check()
        if export.format in seen:
            raise InvalidArgument(
                f"quantized export {export.format.upper()} is requested twice",
                field="exports",
            )
        seen.add(export.format)
    if model_dir is not None and any(e.format.startswith("gguf_") for e in exports):
        from services.merger.gguf_export import check_exportable

        check_exportable(model_dir)


def weights_size(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))


def run_exports(model_dir: Path, exports: list[QuantizedExport]) -> list[ExportResult]:
    """Writes and measures every export in a child process.

    Raises FailedPrecondition with the measured numbers when an export cannot
    be written or loses more quality than its limit allows.
    """
    if not exports:
        return []
    spec = {"model": str(model_dir), "exports": [asdict(e) for e in exports]}
    proc = subprocess.run(
        [sys.executable, "-m", "services.merger.quantized", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=EXPORT_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise FailedPrecondition(
            "quantized export failed: "
            + (proc.stderr.strip().splitlines() or ["no output"])[-1]
            + "; nothing was registered"
        )
    results = [ExportResult(**r) for r in json.loads(lines[-1])]
    failed = [r for r in results if not r.passed]
    if failed:
        raise FailedPrecondition(
            "quantized export lost too much quality: "
            + "; ".join(
                f"{r.format.upper()} perplexity {r.perplexity:.4g} vs unquantized "
                f"{r.unquantized_perplexity:.4g} (ratio "
                f"{r.perplexity / r.unquantized_perplexity:.4g}, max "
                f"{r.max_perplexity_ratio})"
                for r in failed
            )
            + f" (measured: {json.dumps([r.summary() for r in results])}); raise "
            "exports.max_perplexity_ratio or pick an 8-bit format; nothing was "
            "registered"
        )
    return results


# --- the child process ---------------------------------------------------------


def _perplexity(model: Any, ids: Any) -> float:
    import torch

    with torch.inference_mode():
        loss = model(input_ids=ids, labels=ids).loss
    return math.exp(float(loss))


def _eval_ids(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    return tokenizer(EVAL_TEXT, return_tensors="pt").input_ids


def _load(model_dir: Path, **kwargs: Any) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(model_dir), local_files_only=True, **kwargs
    ).eval()


def _digest_tree(root: Path, base: Path) -> dict[str, list[Any]]:
    """sha256 and size of every file under `root`, fsynced, keyed by path from base."""
    import hashlib

    files: dict[str, list[Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
            os.fsync(fh.fileno())
        files[path.relative_to(base).as_posix()] = [
            sha.hexdigest(),
            path.stat().st_size,
        ]
    return files


def _export_gguf(model_dir: Path, out: Path, fmt: str) -> tuple[Any, list[str]]:
    import torch

    from services.merger.gguf_export import export_gguf

    report = export_gguf(model_dir, out / GGUF_FILE, fmt)
    model = _load(out, gguf_file=GGUF_FILE, dtype=torch.float32)
    types = ", ".join(f"{n} {k}" for k, n in sorted(report.tensor_types.items()))
    return model, [f"tensor types: {types}", *report.notes]


def _export_bnb(model_dir: Path, out: Path, fmt: str) -> tuple[Any, list[str]]:
    import torch
    from transformers import BitsAndBytesConfig

    if fmt == "bnb_int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = _load(
        model_dir, quantization_config=config, device_map="cpu", dtype=torch.bfloat16
    )
    model.save_pretrained(str(out))  # weights, config with quantization_config
    del model
    for f in sorted(model_dir.iterdir()):
        if f.is_file() and not (out / f.name).exists() and f.suffix != ".safetensors":
            shutil.copyfile(f, out / f.name)  # tokenizer, chat template
    reloaded = _load(out, device_map="cpu")
    return reloaded, [
        "linear layers quantised by bitsandbytes; embeddings, norms and lm_head "
        "stored in bfloat16"
    ]


def _main(spec: dict[str, Any]) -> list[dict[str, Any]]:
    import torch

    torch.manual_seed(0)
    model_dir = Path(spec["model"])
    ids = _eval_ids(model_dir)
    base_ppl = _perplexity(_load(model_dir, dtype=torch.float32), ids)
    base_size = weights_size(model_dir)
    results = []
    for raw in spec["exports"]:
        export = QuantizedExport(**raw)
        rel = Path(EXPORT_DIR) / export.format
        out = model_dir / rel
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        started = time.monotonic()
        if export.format.startswith("gguf_"):
            model, notes = _export_gguf(model_dir, out, export.format)
            size = (out / GGUF_FILE).stat().st_size
        else:
            model, notes = _export_bnb(model_dir, out, export.format)
            size = weights_size(out)
        seconds = time.monotonic() - started
        ppl = _perplexity(model, ids)
        del model
        ratio = ppl / base_ppl
        results.append(
            ExportResult(
                format=export.format,
                path=rel.as_posix(),
                size_bytes=size,
                unquantized_size_bytes=base_size,
                size_reduction=1 - size / base_size,
                perplexity=ppl,
                unquantized_perplexity=base_ppl,
                perplexity_change=ratio - 1,
                max_perplexity_ratio=export.max_perplexity_ratio,
                passed=math.isfinite(ppl) and ratio <= export.max_perplexity_ratio,
                seconds=seconds,
                notes=notes,
                files=_digest_tree(out, model_dir),
            )
        )
    return [asdict(r) for r in results]


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(json.dumps(_main(json.loads(sys.argv[1]))))
