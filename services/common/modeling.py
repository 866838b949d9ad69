"""Loading models, tokenizers and adapters safely (safetensors only, local only).

Sequence classifiers come two ways: a base model with a classification
adapter (PEFT task_type SEQ_CLS, its head saved in full beside the LoRA
weights), or a merged classifier directory (config `architectures` ending in
ForSequenceClassification, with id2label). The trainer records the labels in
the adapter's registry metadata (`class_labels`), not in its files.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any, overload

from services.common.classifier_files import (  # noqa: F401 - re-exported
    ADAPTER_WEIGHTS,
    CLASSIFICATION,
    SEQ_CLS,
    adapter_class_labels,
    classification_head,
    classifier_model_labels,
    is_classification_adapter,
    is_sequence_classifier,
    metadata_of,
    read_json,
    recorded_labels,
)
from services.common.errors import FailedPrecondition, InvalidArgument

# Target-module checks moved to lora_targets; re-exported for their callers.
from services.common.lora_targets import (  # noqa: F401
    TARGET_MODULES,
    adaptable_module_names,
    check_modules_to_save,
    check_target_modules,
    default_target_modules,
    leaf_names,
    meta_model,
    model_module_names,
    unmatched_targets,
)

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def resolve_device(requested: str) -> str:
    import torch

    if requested and requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def require_safetensors_model(path: Path) -> None:
    """Refuses a model directory unless its weights are safetensors."""
    if not (path / "config.json").is_file():
        raise FailedPrecondition(f"model directory {path} has no config.json")
    if not any(path.glob("*.safetensors")):
        pickled = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = (
            f" (found {', '.join(pickled)}: pickle formats are never loaded)"
            if pickled
            else ""
        )
        raise FailedPrecondition(
            f"model directory {path} has no .safetensors weights{hint}; "
            "convert it with `lorafleet models import`"
        )


def require_safetensors_adapter(path: Path) -> None:
    if not (path / "adapter_config.json").is_file():
        raise FailedPrecondition(f"adapter directory {path} has no adapter_config.json")
    if not (path / "adapter_model.safetensors").is_file():
        raise FailedPrecondition(
            f"adapter directory {path} has no adapter_model.safetensors "
            "(pickled adapter_model.bin files are never loaded)"
        )


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    path: Path, device: str = "cpu", dtype: Any = None, quantization: Any = None
):
    """Loads a causal LM from safetensors; `dtype` None keeps float32 on CPU.

    `quantization` is a transformers quantization config (e.g. `nf4_config()`):
    the weights are quantised while loading, straight onto `device`.
    """
    from transformers import AutoModelForCausalLM

    return _from_pretrained(AutoModelForCausalLM, path, device, dtype, quantization)


def new_sequence_classifier(
    path: Path,
    labels: list[str],
    pad_token_id: int | None,
    device: str = "cpu",
    dtype: Any = None,
    quantization: Any = None,
):
    """A base model with a fresh classification head over `labels` (id order).

    The head needs a padding id to find each row's last real token; the
    tokenizer's is used when the base config has none.
    """
    from transformers import AutoModelForSequenceClassification

    extra: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    if config.get("pad_token_id") is None and pad_token_id is not None:
        extra["pad_token_id"] = pad_token_id
    return _from_pretrained(
        AutoModelForSequenceClassification, path, device, dtype, quantization, **extra
    )


@overload
def load_sequence_classifier(
    model_dir: Path,
    device: str = "cpu",
    adapter_dir: Path | None = None,
    *,
    labels: list[str] | None = None,
    dtype: Any = None,
) -> tuple[Any, list[str]]: ...
@overload
def load_sequence_classifier(
    model_dir: Path,
    labels: list[str],
    pad_token_id: int | None,
    device: str = "cpu",
    dtype: Any = None,
    quantization: Any = None,
) -> Any: ...
def load_sequence_classifier(model_dir: Path, *args: Any, **kwargs: Any) -> Any:
    """A trained sequence classifier and its labels: see `load_classifier`.

    The trainer's older form, `(base_dir, labels, pad_token_id, device, dtype,
    quantization) -> model` (a base with a fresh, untrained head), is still
    accepted: a list as the second argument, or pad_token_id by keyword,
    selects it. New code calls `load_classifier` or `new_sequence_classifier`.
    """
    if (args and isinstance(args[0], (list, tuple))) or "pad_token_id" in kwargs:
        return new_sequence_classifier(model_dir, *args, **kwargs)
    return load_classifier(model_dir, *args, **kwargs)


def load_classifier(
    model_dir: Path,
    device: str = "cpu",
    adapter_dir: Path | None = None,
    *,
    labels: list[str] | None = None,
    dtype: Any = None,
) -> tuple[Any, list[str]]:
    """A trained sequence classifier (eval mode) and its labels in class-id order.

    Without `adapter_dir`, `model_dir` must be a merged classifier; its saved
    head is loaded (a head missing from the files is refused, never
    initialised at random). With a classification adapter, the base is loaded
    as AutoModelForSequenceClassification with the adapter's class count and
    the padding id the trainer gave the head, then the adapter is applied,
    unmerged, head included; every adapter tensor must land in the model.
    `labels` names the classes (the registry's `class_labels`: the adapter's
    files carry none); without it they are LABEL_<i>. safetensors only.
    """
    require_safetensors_model(model_dir)
    own = classifier_model_labels(model_dir)
    if adapter_dir is None:
        if own is None:
            raise FailedPrecondition(
                f"model directory {model_dir} holds a causal language model, not "
                "a sequence classifier (no ...ForSequenceClassification in its "
                "config.json architectures); pass its classification adapter as "
                "adapter_dir, or load it with load_causal_lm"
            )
        if labels and list(labels) != own:
            raise FailedPrecondition(
                f"labels {list(labels)} differ from the classifier's own {own} "
                f"(config.json id2label of {model_dir})"
            )
        return _load_saved_classifier(model_dir, device, dtype), own
    require_safetensors_adapter(adapter_dir)
    if not is_classification_adapter(adapter_dir):
        raise FailedPrecondition(
            f"adapter {adapter_dir} is not a classification adapter (its "
            f"adapter_config.json task_type is not {SEQ_CLS}); apply it to "
            "load_causal_lm's model with PeftModel"
        )
    if own is not None:
        raise FailedPrecondition(
            f"model directory {model_dir} is already a sequence classifier; a "
            "classification adapter applies to the causal base it was trained on"
        )
    names = adapter_class_labels(adapter_dir, labels)
    base = new_sequence_classifier(
        model_dir, names, classifier_pad_token_id(model_dir), device, dtype
    )
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
    _check_adapter_loaded(model, adapter_dir)
    return model.eval(), names


def _load_saved_classifier(model_dir: Path, device: str, dtype: Any) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir),
        local_files_only=True,
        use_safetensors=True,
        dtype=dtype,
        output_loading_info=True,
    )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise FailedPrecondition(
            f"classifier {model_dir} lacks {len(missing)} tensors (e.g. "
            f"{missing[0]}) that would start random; merge it again"
        )
    return model.to(device).eval()


def _check_adapter_loaded(model: Any, adapter_dir: Path) -> None:
    """Every tensor of the adapter file is in the model, unchanged."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    saved = load_file(str(adapter_dir / ADAPTER_WEIGHTS))
    state = get_peft_model_state_dict(model)
    lost = [
        k
        for k, v in saved.items()
        if k not in state or not state[k].equal(v.to(state[k].device, state[k].dtype))
    ]
    if lost:
        raise FailedPrecondition(
            f"{len(lost)} tensors of adapter {adapter_dir} (e.g. {lost[0]}) match "
            "no module of the classifier; was it trained on another architecture?"
        )


def classification_labels(model: Any, adapter: Any | None = None) -> list[str] | None:
    """The class labels (class-id order) when `model` with `adapter` on it is a
    sequence classifier, else None (a causal language model).

    Both are registry artifacts (anything with local_path and metadata): a
    merged classifier's labels come from its config, an adapter's from its
    `class_labels` metadata. FailedPrecondition for a pairing no loader can
    serve (a causal-LM adapter on a classifier, or a classifier on one).
    """
    model_dir = Path(model.local_path)
    own = classifier_model_labels(model_dir)
    if adapter is None:
        return own
    adapter_dir, meta = Path(adapter.local_path), metadata_of(adapter)
    classifies = is_classification_adapter(adapter_dir, meta)
    if own is not None:
        kind = "classification" if classifies else "causal-LM"
        raise FailedPrecondition(
            f"model {model.id} is a merged sequence classifier (labels {own}); it "
            f"takes no adapter, and {kind} adapter {adapter.id} applies to the "
            "causal base it was trained on"
        )
    if not classifies:
        return None
    return adapter_class_labels(adapter_dir, recorded_labels(meta))


def classifier_pad_token_id(model_dir: Path) -> int | None:
    """The padding id a classification head over this base finds each row's
    last real token by: the base config's pad_token_id, else its tokenizer's
    (its pad token, or eos when it has none), as the trainer gives the head."""
    pad = read_json(model_dir / "config.json").get("pad_token_id")
    if isinstance(pad, int):
        return pad
    return load_tokenizer(model_dir).pad_token_id


def _from_pretrained(
    auto_class: Any, path: Path, device: str, dtype: Any, quantization: Any, **extra
):
    import torch

    require_safetensors_model(path)
    quiet_transformers()
    if dtype is None:
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
    kwargs: dict[str, Any] = {
        "local_files_only": True,
        "use_safetensors": True,
        "dtype": dtype,
        **extra,
    }
    if quantization is not None:
        # Quantised weights cannot be moved after loading: place them now.
        kwargs.update(quantization_config=quantization, device_map={"": device})
        return auto_class.from_pretrained(str(path), **kwargs)
    return auto_class.from_pretrained(str(path), **kwargs).to(device)


def nf4_config(compute_dtype: Any):
    """QLoRA's base quantisation: 4-bit NF4 with double quantisation."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def quiet_transformers() -> None:
    """Progress bars belong in Watch streams, not in service logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def model_type_of(path: Path) -> str:
    import json

    try:
        return json.loads((path / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read {path / 'config.json'}: {exc}") from exc


def environment_facts() -> dict[str, Any]:
    """Library versions and hardware, recorded with every trained adapter."""
    import peft
    import torch
    import transformers

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cuda": torch.version.cuda or "",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
        "cpu_threads": torch.get_num_threads(),
    }
    return facts
