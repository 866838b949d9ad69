"""Pairs an adapter's tensors with the base model's, checking headers only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.merger.adapter_files import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    SEQ_CLS,
    AdapterSettings,
    group_adapter_keys,
    read_adapter_settings,
)
from services.merger.classifier import ClassifierOutput, check_classifier_plan
from services.merger.safetensors_io import ModelLayout, read_layout, tensor_shapes

# transformers v5 renames some checkpoint keys on load (WeightRenaming), so PEFT
# names the in-memory module while the base file keeps the checkpoint name.
_CHECKPOINT_RENAMES = (("lm_head.", "embed_out."),)  # GPTNeoXForCausalLM


@dataclass(frozen=True)
class ModuleMerge:
    """One adapted module: where its tensors are and how to combine them."""

    module: str
    target: str  # base weight tensor
    a_key: str
    b_key: str
    magnitude_key: str | None
    bias_key: str | None  # adapter lora_B.bias, when trained with lora_bias
    base_bias: str | None
    transposed: bool  # base stores (in, out): gpt2 Conv1D, embeddings
    rank: int
    scale: float


@dataclass(frozen=True)
class MergePlan:
    """Everything checked before any tensor data is read."""

    adapter_dir: Path
    base_dir: Path
    settings: AdapterSettings
    layout: ModelLayout
    merges: dict[str, ModuleMerge]  # by base weight name
    bias_merges: dict[str, ModuleMerge]  # by base bias name
    replacements: dict[str, str]  # base tensor -> adapter key (modules_to_save)
    # A classification adapter's output: a sequence classifier (its head
    # added from the adapter, the LM head dropped); None for a causal LM.
    classifier: ClassifierOutput | None = None

    def provenance(
        self, adapter_digest: str = "", base_digest: str = ""
    ) -> dict[str, Any]:
        s = self.settings
        facts: dict[str, Any] = {
            "method": "lora",
            "scale": s.scale(s.r, s.alpha),
            "rank": s.r,
            "alpha": s.alpha,
            "use_rslora": s.use_rslora,
            "use_dora": s.use_dora,
            "adapter_digest": adapter_digest,
            "base_digest": base_digest,
        }
        if s.rank_pattern or s.alpha_pattern:
            facts.update(rank_pattern=s.rank_pattern, alpha_pattern=s.alpha_pattern)
        return facts


def _resolve(name: str, base: dict[str, Any]) -> str | None:
    """The base tensor for an adapter-side name, tolerating a differing prefix.

    A GPT2LMHeadModel adapter says "transformer.h.0..." while a GPT2Model
    checkpoint says "h.0...": both name the same weight.
    """
    if name in base:
        return name
    for loaded, stored in _CHECKPOINT_RENAMES:
        if name.startswith(loaded) and stored + name[len(loaded) :] in base:
            return stored + name[len(loaded) :]
    hits = [k for k in base if k.endswith("." + name)]
    if len(hits) == 1:
        return hits[0]
    parts = name.split(".")
    for i in range(1, len(parts) - 1):
        if ".".join(parts[i:]) in base:
            return ".".join(parts[i:])
    return None


def _plan_module(
    module: str,
    roles: dict[str, str],
    settings: AdapterSettings,
    shapes: dict[str, tuple[int, ...]],
    layout: ModelLayout,
) -> ModuleMerge:
    base = layout.tensors
    if "A" not in roles or "B" not in roles:
        have = next(iter(roles.values()))
        raise FailedPrecondition(
            f"adapter tensor {have} has no matching "
            f"{'lora_B' if 'A' in roles else 'lora_A'} tensor"
        )
    a_key, b_key = roles["A"], roles["B"]
    target = _resolve(module + ".weight", base)
    if target is None:
        raise FailedPrecondition(
            f"adapter tensor {a_key} targets {module}.weight, which the base model "
            "does not have; was the adapter trained on a different architecture?"
        )
    a, b, w = shapes[a_key], shapes[b_key], base[target].shape
    rank, alpha = settings.rank_alpha(module)
    if len(a) != 2 or len(b) != 2 or a[0] != b[1] or a[0] != rank:
        raise FailedPrecondition(
            f"adapter tensors {a_key} {a} and {b_key} {b} do not form a rank-{rank} "
            f"product as {ADAPTER_CONFIG} says"
        )
    out_f, in_f = b[0], a[1]
    plain, flipped = w == (out_f, in_f), w == (in_f, out_f)
    if "lora_embedding_A" in a_key:
        plain = False  # embeddings store (num_embeddings, dim): always flipped
    if not (plain or flipped):
        raise FailedPrecondition(
            f"shape mismatch at base tensor {target}: its shape is {w} but adapter "
            f"tensors {a_key} {a} and {b_key} {b} give a delta of shape "
            f"({out_f}, {in_f}); the adapter was trained on a base of other dimensions"
        )
    transposed = settings.fan_in_fan_out if plain and flipped else flipped
    magnitude = roles.get("magnitude")
    if settings.use_dora != (magnitude is not None):
        raise FailedPrecondition(
            f"{ADAPTER_CONFIG} has use_dora={settings.use_dora} but module {module} "
            f"{'has' if magnitude else 'lacks'} a lora_magnitude_vector"
        )
    if magnitude is not None and shapes[magnitude] != (out_f,):
        raise FailedPrecondition(
            f"shape mismatch: DoRA magnitude {magnitude} has shape "
            f"{shapes[magnitude]}, expected ({out_f},)"
        )
    base_bias = None
    if "bias" in roles:
        base_bias = _resolve(module + ".bias", base)
        if base_bias is None or base[base_bias].shape != (out_f,):
            raise FailedPrecondition(
                f"adapter tensor {roles['bias']} needs a base bias of shape "
                f"({out_f},) at {module}.bias, found "
                f"{base[base_bias].shape if base_bias else None}"
            )
    return ModuleMerge(
        module,
        target,
        a_key,
        b_key,
        magnitude,
        roles.get("bias"),
        base_bias,
        transposed,
        rank,
        settings.scale(rank, alpha),
    )


def _check_targets(settings: AdapterSettings, base: dict[str, Any]) -> None:
    if not isinstance(settings.target_modules, list):
        return  # a regex or "all-linear": checked through the adapter's tensors
    for name in settings.target_modules:
        parts = name.split(".")
        candidates = {".".join(parts[i:]) + ".weight" for i in range(len(parts))}
        if _resolve(name + ".weight", base) is None and not any(
            k in candidates or any(k.endswith("." + c) for c in candidates)
            for k in base
        ):
            raise FailedPrecondition(
                f"{ADAPTER_CONFIG} targets module {name!r}, which "
                "the base model does not have"
            )


def plan_merge(
    adapter_dir: Path, base_dir: Path, classifier: ClassifierOutput | None = None
) -> MergePlan:
    """Checks that the adapter fits the base, reading headers only.

    Raises FailedPrecondition naming the first offending tensor, so a bad
    pairing fails in milliseconds instead of after minutes of arithmetic.
    A classification adapter needs its `classifier` (classifier.plan_classifier).
    """
    settings = read_adapter_settings(adapter_dir)
    if settings.task_type == SEQ_CLS and classifier is None:
        raise FailedPrecondition(
            f"adapter {adapter_dir} is a classification adapter (task_type "
            f"{SEQ_CLS}); its merge writes a sequence classifier: plan it with "
            "classifier.plan_classifier and pass it as `classifier`"
        )
    head = classifier.head_keys if classifier is not None else {}
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FailedPrecondition(
            f"adapter directory {adapter_dir} has no {ADAPTER_WEIGHTS}"
        )
    config_path = base_dir / "config.json"
    if not config_path.is_file():
        raise FailedPrecondition(f"base model directory {base_dir} has no config.json")
    if "quantization_config" in json.loads(config_path.read_text()):
        raise FailedPrecondition(
            "the base model is quantized; merge into the unquantized base model instead"
        )
    layout = read_layout(base_dir)
    base = layout.tensors
    shapes = tensor_shapes(weights)
    modules, others = group_adapter_keys(shapes)
    merges: dict[str, ModuleMerge] = {}
    bias_merges: dict[str, ModuleMerge] = {}
    for module in sorted(modules):
        m = _plan_module(module, modules[module], settings, shapes, layout)
        merges[m.target] = m
        if m.base_bias:
            bias_merges[m.base_bias] = m
    replacements: dict[str, str] = {}
    for name, key in sorted(others.items()):
        if name in head:
            continue  # the classification head: added, it replaces nothing
        owner = name.rsplit(".", 1)[0]
        saved = any(
            owner == m or owner.endswith("." + m) for m in settings.modules_to_save
        )
        override = ".base_layer." in key
        if not (
            saved or override or (settings.bias != "none" and name.endswith(".bias"))
        ):
            raise FailedPrecondition(
                f"adapter tensor {key} is neither a LoRA weight nor "
                "part of modules_to_save"
            )
        target = _resolve(name, base)
        if target is None or base[target].shape != shapes[key]:
            found = base[target].shape if target else "no such tensor"
            raise FailedPrecondition(
                f"adapter tensor {key} {shapes[key]} replaces base "
                f"tensor {name}, which has {found}"
            )
        if not override and (target in merges or target in bias_merges):
            raise FailedPrecondition(
                f"adapter tensor {key} both replaces and adapts {target}"
            )
        replacements[target] = key
    _check_targets(settings, base)
    if classifier is not None:
        check_classifier_plan(classifier, {*merges, *bias_merges, *replacements})
    return MergePlan(
        adapter_dir,
        base_dir,
        settings,
        layout,
        merges,
        bias_merges,
        replacements,
        classifier,
    )
