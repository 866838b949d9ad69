"""The one rule every service applies to an adapter and the base it runs on.

An adapter applies to the weights it was trained on: the base digest it
records decides (the same weights registered under another id are fine);
without a digest, the recorded base id; an adapter recording neither is
refused everywhere — merger, validator and inference alike — with the way to
record one, since a LoRA on the wrong base gives wrong answers, not errors.
"""

from __future__ import annotations

from typing import Any

from services.common.classifier_files import metadata_of
from services.common.errors import FailedPrecondition


def check_adapter_base(
    adapter: Any, base: Any, *, field: str = "", remedy: str = ""
) -> None:
    meta = metadata_of(adapter)
    recorded_id = str(meta.get("base_model_id", "") or "")
    recorded_digest = str(meta.get("base_model_digest", "") or "")
    if not recorded_id and not recorded_digest:
        raise FailedPrecondition(
            f"adapter {adapter.id} records no base model, so nothing says which "
            "weights it applies to; register it with its base: `lorafleet models "
            "import <adapter folder> --base <base ref>` (or RegisterArtifact with "
            "metadata base_model_id and base_model_digest)",
            field=field or None,
        )
    same = (
        recorded_digest == base.digest if recorded_digest else recorded_id == base.id
    )
    if not same:
        raise FailedPrecondition(
            f"adapter {adapter.id} was trained on base {recorded_id or '(unknown id)'} "
            f"(digest {recorded_digest or 'not recorded'}) but {base.id} (digest "
            f"{base.digest}) was given; "
            + (remedy or "pass the adapter's own base model"),
            field=field or None,
        )
