"""Merges a PEFT LoRA/rsLoRA/DoRA adapter into a safetensors base model, exactly."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from services.common.errors import FailedPrecondition, InvalidArgument
from services.merger.safetensors_io import (
    INDEX_NAME,
    ModelLayout,
    nbytes,
    read_layout,
    streaming_writer,
    tensor_shapes,
)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT's save_pretrained prefixes every key with the wrapper modules' names.
PEFT_PREFIX = "base_model.model."
# Suffix of a PEFT key -> its role; DoRA magnitudes are saved without ".weight".
_ROLES = {
    ".lora_A.weight": "A", ".lora_B.weight": "B", ".lora_B.bias": "bias",
    ".lora_magnitude_vector": "magnitude", ".lora_magnitude_vector.weight": "magnitude",
    ".lora_embedding_A": "A", ".lora_embedding_B": "B",
}
# Config switches that change what merging means; refusing beats merging wrongly.
_UNSUPPORTED = ("use_qalora", "layer_replication", "trainable_token_indices",
                "target_parameters", "alora_invocation_tokens", "arrow_config",
                "use_bdlora", "velora_config", "monteclora_config", "kasa_config")
OUTPUT_DTYPES: dict[str, torch.dtype | None] = {
    "same": None, "float32": torch.float32, "bfloat16": torch.bfloat16,
    "float16": torch.float16}
_SKIPPED_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".ckpt")
# transformers v5 renames some checkpoint keys on load (WeightRenaming), so PEFT
# names the in-memory module while the base file keeps the checkpoint name.
_CHECKPOINT_RENAMES = (("lm_head.", "embed_out."),)  # GPTNeoXForCausalLM

TensorCallback = Callable[[int, int, str], None]


@dataclass(frozen=True)
class AdapterSettings:
    """The parts of adapter_config.json that decide the merged weights."""

    r: int
    alpha: float
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] = field(default_factory=list)
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    bias: str = "none"

    def rank_alpha(self, module: str) -> tuple[int, float]:
        """Per-module rank and alpha, matching patterns as PEFT's get_pattern_key."""
        r, alpha = self.r, self.alpha
        for key, value in self.rank_pattern.items():
            if re.match(rf"(.*\.)?({key})$", module):
                r = int(value)
                break
        for key, value in self.alpha_pattern.items():
            if re.match(rf"(.*\.)?({key})$", module):
                alpha = value
                break
        return r, alpha

    def scale(self, r: int, alpha: float) -> float:
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


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

    def provenance(self, adapter_digest: str = "", base_digest: str = "") -> dict[str, Any]:
        s = self.settings
        facts: dict[str, Any] = {
            "method": "lora", "scale": s.scale(s.r, s.alpha), "rank": s.r,
            "alpha": s.alpha, "use_rslora": s.use_rslora, "use_dora": s.use_dora,
            "adapter_digest": adapter_digest, "base_digest": base_digest}
        if s.rank_pattern or s.alpha_pattern:
            facts.update(rank_pattern=s.rank_pattern, alpha_pattern=s.alpha_pattern)
        return facts


@dataclass(frozen=True)
class MergeStats:
    tensors_merged: int
    tensors_total: int
    tensors_replaced: int
    max_abs_delta: float
    seconds: float
    provenance: dict[str, Any]


def read_adapter_settings(adapter_dir: Path) -> AdapterSettings:
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise FailedPrecondition(f"adapter directory {adapter_dir} has no {ADAPTER_CONFIG}")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"{ADAPTER_CONFIG} is not valid JSON: {exc}") from exc
    if cfg.get("peft_type", "LORA") != "LORA":
        raise FailedPrecondition(f"adapter is a {cfg.get('peft_type')} adapter; only "
                                 "LORA adapters (incl. rsLoRA and DoRA) can be merged")
    for feature in _UNSUPPORTED:
        if cfg.get(feature):
            raise FailedPrecondition(f"adapter sets {feature}={cfg[feature]!r}, which the "
                                     "merger does not support")
    r = int(cfg.get("r") or 0)
    if r <= 0:
        raise FailedPrecondition(f"{ADAPTER_CONFIG} has r={cfg.get('r')!r}; need r >= 1")
    return AdapterSettings(
        r=r, alpha=cfg.get("lora_alpha", r), use_rslora=bool(cfg.get("use_rslora")),
        use_dora=bool(cfg.get("use_dora")), fan_in_fan_out=bool(cfg.get("fan_in_fan_out")),
        target_modules=cfg.get("target_modules"),
        modules_to_save=list(cfg.get("modules_to_save") or []),
        rank_pattern=dict(cfg.get("rank_pattern") or {}),
        alpha_pattern=dict(cfg.get("alpha_pattern") or {}), bias=cfg.get("bias") or "none")


def _resolve(name: str, base: dict[str, Any]) -> str | None:
    """The base tensor for an adapter-side name, tolerating a differing prefix.

    A GPT2LMHeadModel adapter says "transformer.h.0..." while a GPT2Model
    checkpoint says "h.0...": both name the same weight.
    """
    if name in base:
        return name
    for loaded, stored in _CHECKPOINT_RENAMES:
        if name.startswith(loaded) and stored + name[len(loaded):] in base:
            return stored + name[len(loaded):]
    hits = [k for k in base if k.endswith("." + name)]
    if len(hits) == 1:
        return hits[0]
    parts = name.split(".")
    for i in range(1, len(parts) - 1):
        if ".".join(parts[i:]) in base:
            return ".".join(parts[i:])
    return None


def _group_adapter_keys(shapes: dict[str, tuple[int, ...]]
                        ) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    modules: dict[str, dict[str, str]] = {}
    others: dict[str, str] = {}
    for key in sorted(shapes):
        if not key.startswith(PEFT_PREFIX):
            raise FailedPrecondition(f"adapter tensor {key} does not start with "
                                     f"{PEFT_PREFIX!r}; is this a PEFT save_pretrained dir?")
        rest = key[len(PEFT_PREFIX):]
        role = next((r for suffix, r in _ROLES.items() if rest.endswith(suffix)), None)
        if role is not None:
            suffix = next(s for s in _ROLES if rest.endswith(s))
            modules.setdefault(rest[:-len(suffix)], {})[role] = key
        elif ".lora_" in rest or "token_adapter" in rest:
            raise FailedPrecondition(f"adapter tensor {key} is a kind of LoRA weight the "
                                     "merger does not support")
        else:
            # ".base_layer." keys: the targeted layer's own weight, saved by PEFT
            # when embeddings are adapted (they may have been resized)
            name = re.sub(r"\.modules_to_save\.[^.]+", "", rest)
            others[name.replace(".base_layer.", ".")] = key
    return modules, others


def _plan_module(module: str, roles: dict[str, str], settings: AdapterSettings,
                 shapes: dict[str, tuple[int, ...]], layout: ModelLayout) -> ModuleMerge:
    base = layout.tensors
    if "A" not in roles or "B" not in roles:
        have = next(iter(roles.values()))
        raise FailedPrecondition(f"adapter tensor {have} has no matching "
                                 f"{'lora_B' if 'A' in roles else 'lora_A'} tensor")
    a_key, b_key = roles["A"], roles["B"]
    target = _resolve(module + ".weight", base)
    if target is None:
        raise FailedPrecondition(
            f"adapter tensor {a_key} targets {module}.weight, which the base model does "
            "not have; was the adapter trained on a different architecture?")
    a, b, w = shapes[a_key], shapes[b_key], base[target].shape
    rank, alpha = settings.rank_alpha(module)
    if len(a) != 2 or len(b) != 2 or a[0] != b[1] or a[0] != rank:
        raise FailedPrecondition(
            f"adapter tensors {a_key} {a} and {b_key} {b} do not form a rank-{rank} "
            f"product as {ADAPTER_CONFIG} says")
    out_f, in_f = b[0], a[1]
    plain, flipped = w == (out_f, in_f), w == (in_f, out_f)
    if "lora_embedding_A" in a_key:
        plain = False  # embeddings store (num_embeddings, dim): always flipped
    if not (plain or flipped):
        raise FailedPrecondition(
            f"shape mismatch at base tensor {target}: its shape is {w} but adapter "
            f"tensors {a_key} {a} and {b_key} {b} give a delta of shape "
            f"({out_f}, {in_f}); the adapter was trained on a base of other dimensions")
    transposed = settings.fan_in_fan_out if plain and flipped else flipped
    magnitude = roles.get("magnitude")
    if settings.use_dora != (magnitude is not None):
        raise FailedPrecondition(
            f"{ADAPTER_CONFIG} has use_dora={settings.use_dora} but module {module} "
            f"{'has' if magnitude else 'lacks'} a lora_magnitude_vector")
    if magnitude is not None and shapes[magnitude] != (out_f,):
        raise FailedPrecondition(f"shape mismatch: DoRA magnitude {magnitude} has shape "
                                 f"{shapes[magnitude]}, expected ({out_f},)")
    base_bias = None
    if "bias" in roles:
        base_bias = _resolve(module + ".bias", base)
        if base_bias is None or base[base_bias].shape != (out_f,):
            raise FailedPrecondition(
                f"adapter tensor {roles['bias']} needs a base bias of shape ({out_f},) "
                f"at {module}.bias, found {base[base_bias].shape if base_bias else None}")
    return ModuleMerge(module, target, a_key, b_key, magnitude, roles.get("bias"),
                       base_bias, transposed, rank, settings.scale(rank, alpha))


def _check_targets(settings: AdapterSettings, base: dict[str, Any]) -> None:
    if not isinstance(settings.target_modules, list):
        return  # a regex or "all-linear": checked through the adapter's tensors
    for name in settings.target_modules:
        parts = name.split(".")
        candidates = {".".join(parts[i:]) + ".weight" for i in range(len(parts))}
        if not any(k in candidates or any(k.endswith("." + c) for c in candidates)
                   for k in base):
            raise FailedPrecondition(f"{ADAPTER_CONFIG} targets module {name!r}, which "
                                     "the base model does not have")


def plan_merge(adapter_dir: Path, base_dir: Path) -> MergePlan:
    """Checks that the adapter fits the base, reading headers only.

    Raises FailedPrecondition naming the first offending tensor, so a bad
    pairing fails in milliseconds instead of after minutes of arithmetic.
    """
    settings = read_adapter_settings(adapter_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise FailedPrecondition(f"adapter directory {adapter_dir} has no {ADAPTER_WEIGHTS}")
    config_path = base_dir / "config.json"
    if not config_path.is_file():
        raise FailedPrecondition(f"base model directory {base_dir} has no config.json")
    if "quantization_config" in json.loads(config_path.read_text()):
        raise FailedPrecondition("the base model is quantized; merge into the "
                                 "unquantized base model instead")
    layout = read_layout(base_dir)
    base = layout.tensors
    shapes = tensor_shapes(weights)
    modules, others = _group_adapter_keys(shapes)
    merges: dict[str, ModuleMerge] = {}
    bias_merges: dict[str, ModuleMerge] = {}
    for module in sorted(modules):
        m = _plan_module(module, modules[module], settings, shapes, layout)
        merges[m.target] = m
        if m.base_bias:
            bias_merges[m.base_bias] = m
    replacements: dict[str, str] = {}
    for name, key in sorted(others.items()):
        owner = name.rsplit(".", 1)[0]
        saved = any(owner == m or owner.endswith("." + m) for m in settings.modules_to_save)
        override = ".base_layer." in key
        if not (saved or override or (settings.bias != "none" and name.endswith(".bias"))):
            raise FailedPrecondition(f"adapter tensor {key} is neither a LoRA weight nor "
                                     "part of modules_to_save")
        target = _resolve(name, base)
        if target is None or base[target].shape != shapes[key]:
            found = base[target].shape if target else "no such tensor"
            raise FailedPrecondition(f"adapter tensor {key} {shapes[key]} replaces base "
                                     f"tensor {name}, which has {found}")
        if not override and (target in merges or target in bias_merges):
            raise FailedPrecondition(f"adapter tensor {key} both replaces and adapts {target}")
        replacements[target] = key
    _check_targets(settings, base)
    return MergePlan(adapter_dir, base_dir, settings, layout, merges, bias_merges,
                     replacements)


def merged_weight(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float,
                  transposed: bool, magnitude: torch.Tensor | None = None) -> torch.Tensor:
    """W + scale*(B@A) in float32; with DoRA rescaled row-wise as PEFT merges it.

    DoRA's norm is taken per output feature of W + scale*BA in the (out, in)
    orientation, then m/norm multiplies each output feature - the same for
    nn.Linear, gpt2's Conv1D (stored (in, out)) and embeddings.
    """
    w = weight.to(torch.float32)
    delta = (b.to(torch.float32) @ a.to(torch.float32)) * scale  # (out, in)
    if transposed:
        delta = delta.T
    if magnitude is None:
        return w + delta
    combined = w + delta
    norm = torch.linalg.norm(combined.T if transposed else combined, dim=1)
    factor = (magnitude.to(torch.float32) / norm).view(-1, 1)
    return (factor.T if transposed else factor) * combined


def _merged_tensor(plan: MergePlan, name: str, tensor: torch.Tensor, adapter: Any
                   ) -> torch.Tensor | None:
    """The new value of base tensor `name`, or None when it stays as it is."""
    replaced = name in plan.replacements
    if replaced:
        tensor = adapter.get_tensor(plan.replacements[name])
    if name in plan.merges:
        m = plan.merges[name]
        magnitude = adapter.get_tensor(m.magnitude_key) if m.magnitude_key else None
        return merged_weight(tensor, adapter.get_tensor(m.a_key),
                             adapter.get_tensor(m.b_key), m.scale, m.transposed, magnitude)
    if name in plan.bias_merges:
        m = plan.bias_merges[name]
        extra = adapter.get_tensor(m.bias_key).to(torch.float32) * m.scale
        return tensor.to(torch.float32) + extra
    return tensor if replaced else None


def _copy_side_files(base_dir: Path, out_dir: Path, dtype_name: str) -> None:
    """Config, tokenizer, generation config, chat template: all but the weights."""
    for f in sorted(base_dir.iterdir()):
        if (f.is_file() and not f.name.startswith(".") and f.name != INDEX_NAME
                and not f.name.endswith(_SKIPPED_SUFFIXES)):
            shutil.copyfile(f, out_dir / f.name)  # store files are read-only
    if dtype_name != "same":
        config = json.loads((out_dir / "config.json").read_text())
        keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype"]
        config.update({k: dtype_name for k in keys})
        (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def execute_merge(plan: MergePlan, out_dir: Path, *, output_dtype: str = "same",
                  adapter_digest: str = "", base_digest: str = "",
                  on_tensor: TensorCallback | None = None) -> MergeStats:
    """Writes the merged model into `out_dir`, one tensor in memory at a time.

    `on_tensor(done, total, name)` runs after each tensor; raising from it (e.g.
    on cancellation) stops the merge.
    """
    if output_dtype not in OUTPUT_DTYPES:
        raise InvalidArgument(f"output dtype {output_dtype!r} is not one of "
                              f"{', '.join(OUTPUT_DTYPES)}", field="output_dtype")
    started = time.monotonic()
    target = OUTPUT_DTYPES[output_dtype]
    provenance = plan.provenance(adapter_digest, base_digest)
    metadata = {"format": "pt", **{f"merge_{k}": v if isinstance(v, str) else
                                   json.dumps(v) for k, v in provenance.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(len(infos) for infos in plan.layout.shards.values())
    done = merged = replaced = total_size = 0
    max_delta = 0.0
    with safe_open(str(plan.adapter_dir / ADAPTER_WEIGHTS), framework="pt") as adapter:
        for shard, infos in plan.layout.shards.items():
            specs = [(t.name, target if target and t.dtype.is_floating_point else t.dtype,
                      t.shape) for t in infos]
            total_size += sum(nbytes(dtype, shape) for _, dtype, shape in specs)
            with safe_open(str(plan.base_dir / shard), framework="pt") as base, \
                    streaming_writer(out_dir / shard, specs, metadata) as writer:
                for name, dtype, _ in specs:
                    tensor = base.get_tensor(name)
                    new = _merged_tensor(plan, name, tensor, adapter)
                    if new is not None:
                        change = (new.to(torch.float32) - tensor.to(torch.float32)).abs()
                        max_delta = max(max_delta, float(change.max()) if change.numel() else 0)
                        adapted = name in plan.merges or name in plan.bias_merges
                        merged += adapted
                        replaced += not adapted
                        tensor = new
                    tensor = tensor.to(dtype)
                    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                        raise FailedPrecondition(
                            f"merged tensor {name} contains NaN or Inf values as "
                            f"{output_dtype}; the adapter is broken or the weights "
                            "overflow the output dtype")
                    writer.write(name, tensor)
                    done += 1
                    if on_tensor is not None:
                        on_tensor(done, total, name)
    if plan.layout.index is not None:
        index = dict(plan.layout.index)
        index["metadata"] = {**index.get("metadata", {}), "total_size": total_size}
        (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    _copy_side_files(plan.base_dir, out_dir, output_dtype)
    return MergeStats(tensors_merged=merged, tensors_total=total, tensors_replaced=replaced,
                      max_abs_delta=max_delta, seconds=time.monotonic() - started,
                      provenance=provenance)


def merge_adapter(adapter_dir: Path, base_dir: Path, out_dir: Path, *,
                  output_dtype: str = "same", on_tensor: TensorCallback | None = None,
                  adapter_digest: str = "", base_digest: str = "") -> MergeStats:
    """plan_merge + execute_merge: checks everything first, then writes."""
    plan = plan_merge(adapter_dir, base_dir)
    return execute_merge(plan, out_dir, output_dtype=output_dtype, on_tensor=on_tensor,
                         adapter_digest=adapter_digest, base_digest=base_digest)
