"""A request's prompt as token ids, checked against the model's context."""

from __future__ import annotations

from typing import Any

from services.common import datasets
from services.common.errors import InvalidArgument
from services.inference.requests import GenerationRequest

# Prompts longer than this many characters per context token are refused
# before tokenizing (no tokenizer packs more into one token).
MAX_CHARS_PER_TOKEN = 32


def context_of(model: Any) -> int | None:
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def prompt_ids(
    tokenizer: Any, req: GenerationRequest, limit: int | None, model_id: str
) -> list[int]:
    """The ids the model sees (chat template unless raw). INVALID_ARGUMENT
    names the numbers when the prompt and max_new_tokens exceed `limit`."""
    chars = len(req.prompt) + sum(len(m["content"]) for m in req.messages)
    if limit is not None and chars > limit * MAX_CHARS_PER_TOKEN:
        raise InvalidArgument(
            f"the prompt has {chars} characters, more than model "
            f"{model_id}'s context of {limit} tokens can hold; "
            "shorten it",
            field="params.prompt",
        )
    if req.raw:
        text = req.prompt
    else:
        messages = req.messages or [{"role": "user", "content": req.prompt}]
        text = datasets.render_prompt(tokenizer, messages)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InvalidArgument("the prompt is empty", field="params.prompt")
    if limit is not None and len(ids) + req.max_new_tokens > limit:
        raise InvalidArgument(
            f"prompt tokens ({len(ids)}) plus max_new_tokens "
            f"({req.max_new_tokens}) = {len(ids) + req.max_new_tokens} exceed "
            f"model {model_id}'s context of {limit} tokens; shorten "
            "the prompt or lower params.max_new_tokens",
            field="params.max_new_tokens",
        )
    return ids
