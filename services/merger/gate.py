"""The merge-correctness gate: evidence a merged model is right before it is registered.

Runs in its own process (`python -m services.merger.gate SPEC_JSON`) because it
needs transformers and peft, which the streaming merge itself never imports.
Checks: tokenizer fits the embeddings; for a LoRA merge, the merged model's
logits match base+adapter (unmerged) on a probe batch (a classification
adapter's: the merged classifier's class logits against the adapter's); for
multi-model merges, probe perplexity is not worse than the worst input by more
than a factor.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition, InvalidArgument

PROBE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Please send 3 blue mugs to Leeds by Friday.",
    "In 1905 Einstein published four papers that changed physics.",
    '{"name": "Ada", "qty": 2, "city": "Porto"}',
]
# Max |merged - unmerged| logits relative to the largest logit, by output dtype:
# float32 merges are exact up to summation order; 16-bit outputs round weights.
LOGIT_TOLERANCE = {"float32": 1e-4, "same": 1e-4, "bfloat16": 5e-2, "float16": 2e-2}
# A multi-model merge may not raise probe perplexity above this multiple of its
# worst input's.
MAX_PERPLEXITY_FACTOR = 1.5
GATE_TIMEOUT_S = 1800
# What an adapter's `base_quantization` metadata may say (QLoRA's base).
BASE_QUANTIZATIONS = ("nf4", "fp4", "int8")


@dataclass(frozen=True)
class GateSettings:
    """A request's gate settings; zeros take the defaults."""

    max_perplexity_factor: float = 0.0
    logit_tolerance: float = 0.0
    skip: bool = False

    def check(self) -> None:
        factor, tolerance = self.max_perplexity_factor, self.logit_tolerance
        if factor and not (math.isfinite(factor) and factor >= 1.0):
            raise InvalidArgument(
                f"gate.max_perplexity_factor must be >= 1 (merged perplexity may "
                f"be at most this multiple of the worst input's), got {factor}; 0 "
                f"takes {MAX_PERPLEXITY_FACTOR}",
                field="gate.max_perplexity_factor",
            )
        if tolerance and not (math.isfinite(tolerance) and 0.0 < tolerance <= 1.0):
            raise InvalidArgument(
                f"gate.logit_tolerance must be in (0, 1] (relative to the largest "
                f"logit), got {tolerance}; 0 takes the output dtype's default "
                f"({', '.join(f'{k} {v}' for k, v in LOGIT_TOLERANCE.items())})",
                field="gate.logit_tolerance",
            )

    def factor(self) -> float:
        return self.max_perplexity_factor or MAX_PERPLEXITY_FACTOR

    def tolerance(self, output_dtype: str) -> float:
        return self.logit_tolerance or LOGIT_TOLERANCE.get(output_dtype, 1e-4)


@dataclass
class GateReport:
    passed: bool
    checks: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _load(path: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=torch.float32
    )
    return model.eval()


def _probe(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(PROBE_TEXTS, return_tensors="pt", padding=True)


def _logits(model, batch):
    import torch

    with torch.inference_mode():
        return model(**batch).logits.float()


def _perplexity(model, batch) -> float:
    import torch

    logits = _logits(model, batch)[:, :-1]
    labels = batch["input_ids"][:, 1:].masked_fill(
        batch["attention_mask"][:, 1:] == 0, -100
    )
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100
    )
    return math.exp(float(loss))


def _quantized_base_logits(spec: dict[str, Any], batch):
    """Logits of the adapter on the quantised base it was trained on (QLoRA)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kind = spec["base_quantization"]
    if kind == "int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=kind,
            bnb_4bit_use_double_quant=True,  # as the trainer's QLoRA loads it
            bnb_4bit_compute_dtype=torch.float32,
        )
    classifier = spec.get("classifier")
    if classifier:
        from services.common.modeling import new_sequence_classifier

        base = new_sequence_classifier(
            Path(spec["base"]),
            classifier["labels"],
            classifier["pad_token_id"],
            "cpu",
            torch.float32,
            quantization=config,
        )
    else:
        base = AutoModelForCausalLM.from_pretrained(
            spec["base"],
            local_files_only=True,
            use_safetensors=True,
            quantization_config=config,
            device_map="cpu",
            dtype=torch.float32,
        )
    return _logits(PeftModel.from_pretrained(base, spec["adapter"]).eval(), batch)


def _load_classifier(spec: dict[str, Any], adapter: bool) -> Any:
    """The merged classifier, or (`adapter`) base + adapter unmerged, in fp32."""
    import torch

    from services.common.modeling import load_classifier

    if adapter:
        return load_classifier(
            Path(spec["base"]),
            "cpu",
            Path(spec["adapter"]),
            labels=spec["classifier"]["labels"],
            dtype=torch.float32,
        )
    return load_classifier(Path(spec["merged"]), "cpu", dtype=torch.float32)


def run_gate(spec: dict[str, Any]) -> GateReport:
    """spec: merged, kind ("lora"|"models"), base, adapter, inputs, dtype, factor,
    tolerance, base_quantization (QLoRA adapters: "nf4", "fp4" or "int8"),
    classifier (a classification merge: {labels, pad_token_id}; the logits
    compared are the classifier's, one row per probe text)."""
    from transformers import AutoTokenizer

    report = GateReport(passed=True)
    merged_dir = spec["merged"]
    tokenizer = AutoTokenizer.from_pretrained(merged_dir, local_files_only=True)
    classifier = spec.get("classifier")
    if classifier:
        try:
            merged, labels = _load_classifier(spec, adapter=False)
        except FailedPrecondition as exc:
            return GateReport(passed=False, failures=[exc.message])
        report.checks["labels"] = labels
        if labels != classifier["labels"]:
            report.failures.append(
                f"merged classifier's labels {labels} differ from the adapter's "
                f"{classifier['labels']}"
            )
    else:
        merged = _load(merged_dir)
    rows = merged.get_input_embeddings().weight.shape[0]
    report.checks["tokenizer_size"] = len(tokenizer)
    report.checks["embedding_rows"] = rows
    if len(tokenizer) > rows:
        report.failures.append(
            f"tokenizer has {len(tokenizer)} tokens but the embedding has {rows} rows"
        )
    batch = _probe(tokenizer)
    if spec["kind"] == "lora":
        import torch
        from peft import PeftModel

        if classifier:
            expected = _logits(_load_classifier(spec, adapter=True)[0], batch)
            mask = torch.ones(expected.shape[0], dtype=torch.bool)  # one row a text
        else:
            unmerged = PeftModel.from_pretrained(_load(spec["base"]), spec["adapter"])
            expected = _logits(unmerged.eval(), batch)
            mask = batch["attention_mask"].bool()
        got = _logits(merged, batch)
        diff = float((got - expected).abs()[mask].max())
        scale = float(expected.abs()[mask].max()) or 1.0
        tolerance = float(
            spec.get("tolerance")
            or LOGIT_TOLERANCE.get(spec.get("dtype", "same"))
            or 1e-4
        )
        report.checks.update(
            max_abs_logit_diff=diff,
            relative_logit_diff=diff / scale,
            tolerance=tolerance,
        )
        if classifier:
            same = got.argmax(-1) == expected.argmax(-1)
            report.checks["class_agreement"] = float(same.float().mean())
        if diff / scale > tolerance:
            report.failures.append(
                f"merged logits differ from base+adapter by {diff:.3g} "
                f"({diff / scale:.3g} of the largest logit, tolerance {tolerance})"
            )
        if spec.get("base_quantization"):
            # The adapter learnt against a quantised base; the merge uses the
            # full-precision one. How far apart are the two, on the same batch?
            trained = _quantized_base_logits(spec, batch)
            gap = (trained - expected).abs()[mask]
            agree = trained.argmax(-1)[mask] == expected.argmax(-1)[mask]
            report.checks.update(
                base_quantization=spec["base_quantization"],
                quantized_base_max_abs_logit_diff=float(gap.max()),
                quantized_base_mean_abs_logit_diff=float(gap.mean()),
                quantized_base_relative_logit_diff=float(gap.max()) / scale,
                quantized_base_top1_agreement=float(agree.float().mean()),
            )
    else:
        ppl = _perplexity(merged, batch)
        inputs = [_perplexity(_load(p), batch) for p in spec["inputs"]]
        worst = max(inputs)
        stacked = bool(spec.get("stacked"))
        # A layer stack (passthrough slices) is expected to lose perplexity
        # until it is trained further: bounded only when a factor is asked for.
        factor = float(
            spec.get("factor") or (0.0 if stacked else MAX_PERPLEXITY_FACTOR)
        )
        report.checks.update(
            merged_perplexity=ppl, input_perplexities=inputs, max_factor=factor
        )
        if "layers" in spec and spec["layers"]:
            layers = int(getattr(merged.config, "num_hidden_layers", 0) or 0)
            report.checks["layers"] = layers
            if layers != int(spec["layers"]):
                report.failures.append(
                    f"the merged model loads with {layers} layers, expected "
                    f"{spec['layers']}"
                )
        if not math.isfinite(ppl):
            report.failures.append(f"probe perplexity is {ppl} (NaN or Inf)")
        elif factor and ppl > worst * factor:
            report.failures.append(
                f"probe perplexity {ppl:.3f} exceeds the worst input's {worst:.3f} "
                f"by more than x{factor}"
            )
    report.passed = not report.failures
    return report


def check_merge(spec: dict[str, Any]) -> GateReport:
    """Runs the gate in a child process; a failing gate is FailedPrecondition."""
    proc = subprocess.run(
        [sys.executable, "-m", "services.merger.gate", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=GATE_TIMEOUT_S,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise FailedPrecondition(
            "the merge correctness gate could not run: "
            + (proc.stderr.strip().splitlines() or ["no output"])[-1]
        )
    report = GateReport(**json.loads(lines[-1]))
    if not report.passed:
        raise FailedPrecondition(
            "merge correctness gate failed: "
            + "; ".join(report.failures)
            + f" (measured: {json.dumps(report.checks)}); nothing was registered"
        )
    return report


if __name__ == "__main__":
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(json.dumps(asdict(run_gate(json.loads(sys.argv[1])))))


# Any of these makes a folder's tokenizer loadable by transformers.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_tokenizer(settings: GateSettings, model_dir: Path, label: str) -> None:
    """The gate measures merged models on text: refuse up front a model with
    no tokenizer (the gate would fail late, with transformers' misleading
    "You need to have sentencepiece or tiktoken installed")."""
    if settings.skip or any((model_dir / f).is_file() for f in TOKENIZER_FILES):
        return
    raise FailedPrecondition(
        f"{label} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}), and the "
        "merge gate measures the merged model on text; register the model with "
        "its tokenizer files, or set gate.skip to merge without the gate",
        field="gate",
    )
