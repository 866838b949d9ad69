"""PEFT adapter directories as saved by save_pretrained: config and key layout."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import FailedPrecondition

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# PEFT's task type of a classification adapter (its head saved in full).
SEQ_CLS = "SEQ_CLS"
# PEFT's save_pretrained prefixes every key with the wrapper modules' names.
PEFT_PREFIX = "base_model.model."
# Suffix of a PEFT key -> its role; DoRA magnitudes are saved without ".weight".
_ROLES = {
    ".lora_A.weight": "A",
    ".lora_B.weight": "B",
    ".lora_B.bias": "bias",
    ".lora_magnitude_vector": "magnitude",
    ".lora_magnitude_vector.weight": "magnitude",
    ".lora_embedding_A": "A",
    ".lora_embedding_B": "B",
}
# Config switches that change what merging means; refusing beats merging wrongly.
_UNSUPPORTED = (
    "use_qalora",
    "layer_replication",
    "trainable_token_indices",
    "target_parameters",
    "alora_invocation_tokens",
    "arrow_config",
    "use_bdlora",
    "velora_config",
    "monteclora_config",
    "kasa_config",
)


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
    task_type: str = ""  # PEFT's: CAUSAL_LM, SEQ_CLS, ... ("" when unset)

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


def read_adapter_settings(adapter_dir: Path) -> AdapterSettings:
    """Reads adapter_config.json, refusing adapter types a plain merge would break."""
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise FailedPrecondition(
            f"adapter directory {adapter_dir} has no {ADAPTER_CONFIG}"
        )
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise FailedPrecondition(f"{ADAPTER_CONFIG} is not valid JSON: {exc}") from exc
    if cfg.get("peft_type", "LORA") != "LORA":
        raise FailedPrecondition(
            f"adapter is a {cfg.get('peft_type')} adapter; only "
            "LORA adapters (incl. rsLoRA and DoRA) can be merged"
        )
    for feature in _UNSUPPORTED:
        if cfg.get(feature):
            raise FailedPrecondition(
                f"adapter sets {feature}={cfg[feature]!r}, which the "
                "merger does not support"
            )
    try:
        r = int(cfg.get("r") or 0)
    except (TypeError, ValueError, OverflowError):  # NaN, "eight", [8]
        r = 0
    if r <= 0:
        raise FailedPrecondition(
            f"{ADAPTER_CONFIG} has r={cfg.get('r')!r}; need r >= 1"
        )
    alpha = cfg.get("lora_alpha", 8)  # PEFT's LoraConfig default
    if (
        not isinstance(alpha, (int, float))
        or isinstance(alpha, bool)
        or not math.isfinite(alpha)
    ):
        # Every merged weight would be NaN: refuse before any arithmetic.
        raise FailedPrecondition(
            f"{ADAPTER_CONFIG} has lora_alpha={alpha!r}; need a finite number"
        )
    return AdapterSettings(
        r=r,
        alpha=alpha,
        use_rslora=bool(cfg.get("use_rslora")),
        use_dora=bool(cfg.get("use_dora")),
        fan_in_fan_out=bool(cfg.get("fan_in_fan_out")),
        target_modules=cfg.get("target_modules"),
        modules_to_save=list(cfg.get("modules_to_save") or []),
        rank_pattern=dict(cfg.get("rank_pattern") or {}),
        alpha_pattern=dict(cfg.get("alpha_pattern") or {}),
        bias=cfg.get("bias") or "none",
        task_type=str(cfg.get("task_type") or "").upper(),
    )


def group_adapter_keys(
    shapes: dict[str, tuple[int, ...]],
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Sorts PEFT keys into {module: {role: key}} and {base name: key} for the rest.

    The rest are whole tensors that replace the base's (modules_to_save, trained
    biases, a saved ".base_layer." weight); anything else LoRA-like is refused.
    """
    modules: dict[str, dict[str, str]] = {}
    others: dict[str, str] = {}
    for key in sorted(shapes):
        if not key.startswith(PEFT_PREFIX):
            raise FailedPrecondition(
                f"adapter tensor {key} does not start with "
                f"{PEFT_PREFIX!r}; is this a PEFT save_pretrained dir?"
            )
        rest = key[len(PEFT_PREFIX) :]
        suffix = next((s for s in _ROLES if rest.endswith(s)), None)
        if suffix is not None:
            modules.setdefault(rest[: -len(suffix)], {})[_ROLES[suffix]] = key
        elif ".lora_" in rest or "token_adapter" in rest:
            raise FailedPrecondition(
                f"adapter tensor {key} is a kind of LoRA weight the "
                "merger does not support"
            )
        else:
            # ".base_layer." keys: the targeted layer's own weight, saved by PEFT
            # when embeddings are adapted (they may have been resized)
            name = re.sub(r"\.modules_to_save\.[^.]+", "", rest)
            others[name.replace(".base_layer.", ".")] = key
    return modules, others
