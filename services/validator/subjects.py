"""Loading the models a validation measures: a base or merged model, with an
adapter on top or not, as a language model or as a sequence classifier.

A model that fails to load is not an error of the validation job: it is
the first finding of the report (the basic suite's critical `loads`
check), so loading returns the error text instead of raising, except for
a refused file format (pickles), which the caller must hear about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.errors import FailedPrecondition
from services.common.modeling import (
    classification_labels,
    load_causal_lm,
    load_classifier,
    load_tokenizer,
    require_safetensors_adapter,
)
from services.validator.suites.base import Subject


def load_subject(
    label: str, model: Any, adapter: Any | None, device: str
) -> tuple[Subject | None, str]:
    """(subject, "") or (None, why it did not load)."""
    artifact_id = adapter.id if adapter is not None else model.id
    path = Path(model.local_path)
    try:
        tokenizer = load_tokenizer(path)
        labels = classification_labels(model, adapter)
        if labels is not None:
            loaded, labels = load_classifier(
                path,
                device,
                Path(adapter.local_path) if adapter is not None else None,
                labels=labels,
            )
            return (
                Subject(
                    label,
                    artifact_id,
                    loaded.eval(),
                    tokenizer,
                    kind="classifier",
                    labels=list(labels),
                ),
                "",
            )
        loaded = load_causal_lm(path, device)
        if adapter is not None:
            from peft import PeftModel

            require_safetensors_adapter(Path(adapter.local_path))
            loaded = PeftModel.from_pretrained(loaded, adapter.local_path)
        return Subject(label, artifact_id, loaded.eval(), tokenizer), ""
    except FailedPrecondition:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken model is a finding
        return None, f"{type(exc).__name__}: {exc}"
