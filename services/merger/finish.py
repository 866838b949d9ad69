"""What every merge job does between writing the weights and registering them.

Inside the staging directory (not yet visible under its final name): run the
correctness gate (or record that the request skipped it), write and measure
the quantized exports, and compute the manifest digest of every file from the
digests taken while writing, which the registry then checks
(`expected_digest`) as it copies the files in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import Internal
from services.common.jobs import JobContext
from services.merger.gate import GateSettings, check_merge
from services.merger.lora_merge import MergeStats
from services.merger.output import WrittenFiles, fsync_tree
from services.merger.quantized import ExportResult, QuantizedExport, run_exports


@dataclass
class Checked:
    """The evidence gathered before registration."""

    gate: dict[str, Any]
    exports: list[ExportResult] = field(default_factory=list)
    digest: str = ""
    notes: list[str] = field(default_factory=list)


def check_and_export(
    ctx: JobContext,
    staged: Path,
    stats: MergeStats,
    gate_spec: dict[str, Any],
    settings: GateSettings,
    exports: list[QuantizedExport],
) -> Checked:
    """Gate, exports and digest for the merged model in `staged`.

    Raises FailedPrecondition (with the measured numbers) when the gate or an
    export check fails; the caller then registers nothing.
    """
    ctx.check_cancelled()
    if settings.skip:
        gate: dict[str, Any] = {"skipped": True}
        ctx.report(stage="gate", progress=0.9, message="gate skipped on request")
    else:
        ctx.report(stage="gate", progress=0.9, message=_gate_message(gate_spec))
        gate = check_merge(gate_spec).checks
    checked = Checked(gate=gate)
    if gate_spec.get("base_quantization") and not settings.skip:
        checked.notes.append(qlora_note(gate))
        ctx.report(stage="gate", progress=0.91, message=checked.notes[-1])
    ctx.check_cancelled()
    if exports:
        names = ", ".join(e.format.upper() for e in exports)
        ctx.report(stage="export", progress=0.91, message=f"exporting {names}")
        checked.exports = run_exports(staged, exports)
        for r in checked.exports:
            ctx.report(
                stage="export",
                progress=0.94,
                message=f"{r.format.upper()}: {r.size_bytes / 2**20:.1f} MiB "
                f"({r.size_reduction:.1%} smaller), perplexity "
                f"{r.perplexity:.4g} vs {r.unquantized_perplexity:.4g} "
                f"({r.perplexity_change:+.2%})",
            )
    assert stats.written is not None
    files = dict(stats.written.files)
    for r in checked.exports:
        files.update({path: (sha, size) for path, (sha, size) in r.files.items()})
    on_disk = {
        p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()
    }
    if on_disk != set(files):
        raise Internal(
            "merged output holds files that were not digested while written: "
            f"{sorted(on_disk ^ set(files))[:5]}"
        )
    checked.digest = WrittenFiles(files, stats.written.shards, 0).manifest_digest()
    fsync_tree(staged)  # the files' names, before the rename publishes them
    return checked


def qlora_note(gate: dict[str, Any]) -> str:
    """The expected rounding error of merging a QLoRA adapter, as measured."""
    return (
        f"adapter was trained on a {gate['base_quantization'].upper()}-quantized "
        "base and is merged into the full-precision base: on the probe batch, "
        "logits of the quantized base + adapter differ from the full-precision "
        f"base + adapter by {gate['quantized_base_mean_abs_logit_diff']:.3g} on "
        f"average and {gate['quantized_base_max_abs_logit_diff']:.3g} at most "
        f"({gate['quantized_base_relative_logit_diff']:.2%} of the largest logit), "
        f"and pick the same next token at "
        f"{gate['quantized_base_top1_agreement']:.1%} of positions; expect the "
        "merged model to differ from the model as trained by about that much"
    )


def _gate_message(spec: dict[str, Any]) -> str:
    if spec["kind"] == "lora":
        return "checking merged logits against base+adapter"
    return "checking probe perplexity against the inputs"
