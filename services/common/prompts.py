"""Examples as model text: chat-template rendering and answer-only token labels.

Shared by the trainer (which learns the answers), the validator (which scores
them) and inference (which renders prompts), so all three see the same text.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument

FALLBACK_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


@dataclass(frozen=True)
class Example:
    """One row as chat turns; `completion` is the last assistant answer, if any.

    `prompt` is a raw prompt (completion task: no chat template), `label` a
    classification label, `rejected` the dispreferred answer of a preference
    row (whose `completion` is the chosen one).
    """

    messages: list[dict[str, str]]
    completion: str | None
    text: str | None = None
    prompt: str | None = None
    label: str | None = None
    rejected: str | None = None


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The text a model sees before it answers the last user turn."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
    joined = "\n\n".join(m["content"] for m in messages)
    return FALLBACK_PROMPT.format(instruction=joined)


def prompt_messages(example: Example) -> list[dict[str, str]]:
    """The turns before the final assistant answer."""
    return example.messages[:-1] if example.completion is not None else example.messages


def prompt_text(tokenizer, example: Example) -> str:
    """What the model is given before its answer: raw for completion rows."""
    if example.prompt is not None:
        return example.prompt
    return render_prompt(tokenizer, prompt_messages(example))


def rejected_example(example: Example) -> Example:
    """A preference row's dispreferred answer as an example of its own."""
    return Example(
        messages=[
            *example.messages[:-1],
            {"role": "assistant", "content": example.rejected or ""},
        ],
        completion=example.rejected,
    )


def tokenize_for_training(
    tokenizer, example: Example, max_length: int
) -> dict[str, list[int]]:
    """input_ids and labels; prompt tokens are masked (-100) so loss is on answers."""
    eos = tokenizer.eos_token or ""
    if example.text is not None:
        ids = tokenizer(example.text + eos, add_special_tokens=False)["input_ids"][
            :max_length
        ]
        return {"input_ids": ids, "labels": list(ids)}
    ids: list[int] = []
    labels: list[int] = []
    if example.prompt is not None:  # completion task: the prompt as written
        _append(tokenizer, ids, labels, example.prompt, learn=False)
        _append(tokenizer, ids, labels, (example.completion or "") + eos, learn=True)
    elif has_chat_template(tokenizer):
        # Render turn by turn so each assistant answer (and its end marker) is
        # learned while user/system turns and template scaffolding are masked.
        rendered = ""
        for i, msg in enumerate(example.messages):
            if msg["role"] == "assistant":
                prefix = tokenizer.apply_chat_template(
                    example.messages[:i], tokenize=False, add_generation_prompt=True
                )
                full = tokenizer.apply_chat_template(
                    example.messages[: i + 1], tokenize=False
                )
                if not (full.startswith(prefix) and prefix.startswith(rendered)):
                    raise InvalidArgument(
                        "the tokenizer's chat template does not render turns "
                        "incrementally, so answer tokens cannot be isolated; use a "
                        "template whose prefixes are stable"
                    )
                _append(tokenizer, ids, labels, prefix[len(rendered) :], learn=False)
                _append(tokenizer, ids, labels, full[len(prefix) :], learn=True)
                rendered = full
    else:
        prompt = render_prompt(tokenizer, prompt_messages(example))
        _append(tokenizer, ids, labels, prompt, learn=False)
        _append(tokenizer, ids, labels, (example.completion or "") + eos, learn=True)
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def _append(
    tokenizer, ids: list[int], labels: list[int], text: str, learn: bool
) -> None:
    if not text:
        return
    piece = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids.extend(piece)
    labels.extend(piece if learn else [-100] * len(piece))
