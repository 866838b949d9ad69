"""A generation request and its result, as the inference engines take and give them."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.errors import InvalidArgument, shorten


@dataclass
class GenerationRequest:
    prompt: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)
    raw: bool = False
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)

    def check(self, limit: int) -> None:
        if not self.prompt.strip() and not self.messages:
            raise InvalidArgument(
                "params.prompt or params.messages is required", field="params.prompt"
            )
        if not 1 <= self.max_new_tokens <= limit:
            raise InvalidArgument(
                f"params.max_new_tokens must be in [1, {limit}], got "
                f"{self.max_new_tokens}",
                field="params.max_new_tokens",
            )
        if not 0.0 <= self.temperature <= 5.0:
            raise InvalidArgument(
                f"params.temperature must be in [0, 5], got {self.temperature}",
                field="params.temperature",
            )
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidArgument(
                f"params.top_p must be in (0, 1], got {self.top_p}",
                field="params.top_p",
            )
        for m in self.messages:
            if m["role"] not in ("system", "user", "assistant"):
                raise InvalidArgument(
                    f"message role {shorten(repr(m['role']))} must be system, user "
                    "or assistant",
                    field="params.messages",
                )


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "eos" | "length" | "stop"
    latency_ms: float  # from its prefill to its last token
    queue_ms: float = 0.0  # waiting to join the batch
    first_token_ms: float = 0.0  # from arrival to its first token
