"""Model serving: base models loaded once, adapters attached per request, LRU cache.

A base model and all the LoRA adapters used with it share one copy of the base
weights (PEFT multi-adapter); a request names the adapter it wants and the
engine activates it for the duration of that request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import datasets
from services.common.errors import FailedPrecondition, InvalidArgument, shorten
from services.common.generation import eos_ids
from services.common.modeling import (
    check_adapter_base,
    load_causal_lm,
    load_tokenizer,
    require_safetensors_adapter,
)

log = logging.getLogger(__name__)

# Resolves a registry id to its Artifact and whether it is a model or an adapter.
Resolver = Callable[[str], Any]


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
    latency_ms: float


@dataclass
class LoadedModel:
    artifact: Any
    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    adapters: dict[str, Any] = field(default_factory=dict)  # adapter id -> artifact

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _adapter_name(adapter_id: str) -> str:
    return "a_" + "".join(c if c.isalnum() else "_" for c in adapter_id)


class InferenceEngine:
    """Holds up to `max_models` models; the least recently used is unloaded first."""

    def __init__(
        self, resolve: Resolver, device: str, max_models: int, max_new_tokens_limit: int
    ) -> None:
        self._resolve = resolve
        self._device = device
        self._max_models = max(1, max_models)
        self.max_new_tokens_limit = max_new_tokens_limit
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    # --- loading ----------------------------------------------------------------
    def load(self, model_id: str, adapter_id: str = "") -> LoadedModel:
        artifact = self._resolve(model_id)
        if artifact.kind_name not in ("BASE_MODEL", "MERGED_MODEL"):
            raise FailedPrecondition(
                f"{model_id} is a {artifact.kind_name}, not a servable model; pass "
                "adapters as adapter_id with their base model as model_id"
            )
        entry = self._load_model(artifact)
        if adapter_id:
            self._attach_adapter(entry, adapter_id)
        return entry

    def _load_model(self, artifact: Any) -> LoadedModel:
        with self._lock:
            entry = self._models.get(artifact.id)
            if entry is not None:
                self._models.move_to_end(artifact.id)
                return entry
            gate = self._loading.setdefault(artifact.id, threading.Lock())
        with gate:  # one loader per model; others wait for it
            with self._lock:
                if artifact.id in self._models:
                    return self._models[artifact.id]
            started = time.perf_counter()
            path = Path(artifact.local_path)
            entry = LoadedModel(
                artifact=artifact,
                model=load_causal_lm(path, self._device),
                tokenizer=load_tokenizer(path),
            )
            entry.model.eval()
            log.info(
                "loaded %s (%s) in %.1fs",
                artifact.id,
                artifact.name,
                time.perf_counter() - started,
            )
            with self._lock:
                self._models[artifact.id] = entry
                while len(self._models) > self._max_models:
                    evicted, _ = self._models.popitem(last=False)
                    log.info("unloaded %s (least recently used)", evicted)
                self._loading.pop(artifact.id, None)
            return entry

    def _attach_adapter(self, entry: LoadedModel, adapter_id: str) -> None:
        if adapter_id in entry.adapters:
            return
        adapter = self._resolve(adapter_id)
        if adapter.kind_name != "ADAPTER":
            raise FailedPrecondition(
                f"{adapter_id} is a {adapter.kind_name}, not an adapter"
            )
        check_adapter_base(adapter, entry.artifact)
        path = Path(adapter.local_path)
        require_safetensors_adapter(path)
        with entry.lock:
            if adapter_id in entry.adapters:
                return
            from peft import PeftModel

            name = _adapter_name(adapter_id)
            if isinstance(entry.model, PeftModel):
                entry.model.load_adapter(str(path), adapter_name=name)
            else:
                entry.model = PeftModel.from_pretrained(
                    entry.model, str(path), adapter_name=name
                )
            entry.model.eval()
            entry.adapters[adapter_id] = adapter

    def unload(self, model_id: str) -> bool:
        with self._lock:
            return self._models.pop(model_id, None) is not None

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    # --- generation ---------------------------------------------------------------
    def generate(
        self, model_id: str, adapter_id: str, req: GenerationRequest
    ) -> GenerationResult:
        pieces = list(self.stream(model_id, adapter_id, req))
        return pieces[-1][1]

    def stream(
        self, model_id: str, adapter_id: str, req: GenerationRequest
    ) -> Iterator[tuple[str, GenerationResult | None]]:
        """Yields (text delta, None) as text appears, then ("", final result)."""
        req.check(self.max_new_tokens_limit)
        entry = self.load(model_id, adapter_id)
        import torch
        from transformers import TextIteratorStreamer

        tok = entry.tokenizer
        prompt = self._prompt(tok, req)
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(
            next(entry.model.parameters()).device
        )
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(
            **enc,
            max_new_tokens=req.max_new_tokens,
            do_sample=req.temperature > 0,
            streamer=streamer,
            eos_token_id=eos_ids(entry.model, tok),
            pad_token_id=tok.pad_token_id,
            top_k=None,
            temperature=req.temperature if req.temperature > 0 else None,
            top_p=req.top_p if req.temperature > 0 else None,
        )
        if req.stop:
            kwargs.update(stop_strings=req.stop, tokenizer=tok)
        started = time.perf_counter()
        output: dict[str, Any] = {}
        with entry.lock:
            self._activate(entry, adapter_id)
            if req.seed:
                torch.manual_seed(req.seed)

            def run() -> None:
                try:
                    with torch.inference_mode():
                        output["ids"] = entry.model.generate(**kwargs)
                except Exception as exc:  # noqa: BLE001 - re-raised in the caller
                    output["error"] = exc
                    streamer.end()

            worker = threading.Thread(target=run, name="generate", daemon=True)
            worker.start()
            text, stopped = "", False
            for delta in streamer:
                text += delta
                cut = _first_stop(text, req.stop)
                if cut is not None:
                    delta = delta[: len(delta) - (len(text) - cut)]
                    text, stopped = text[:cut], True
                if delta:
                    yield delta, None
                if cut is not None:
                    break
            worker.join()
        if "error" in output:
            raise output["error"]
        new = output["ids"][0][enc["input_ids"].shape[1] :].tolist()
        stops = set(eos_ids(entry.model, tok))
        if stopped:
            reason = "stop"
        elif new and new[-1] in stops:
            reason = "eos"
        else:
            reason = "length"
        yield (
            "",
            GenerationResult(
                text=text,
                prompt_tokens=int(enc["input_ids"].shape[1]),
                completion_tokens=len(new),
                finish_reason=reason,
                latency_ms=1000.0 * (time.perf_counter() - started),
            ),
        )

    @staticmethod
    def _prompt(tok: Any, req: GenerationRequest) -> str:
        if req.raw:
            return req.prompt
        messages = req.messages or [{"role": "user", "content": req.prompt}]
        return datasets.render_prompt(tok, messages)

    @staticmethod
    def _activate(entry: LoadedModel, adapter_id: str) -> None:
        from peft import PeftModel

        if not isinstance(entry.model, PeftModel):
            return
        if adapter_id:
            entry.model.set_adapter(_adapter_name(adapter_id))
            entry.model.base_model.enable_adapter_layers()
        else:
            entry.model.base_model.disable_adapter_layers()


def _first_stop(text: str, stops: list[str]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None
