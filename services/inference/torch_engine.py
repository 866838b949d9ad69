"""The torch engine: models in an LRU cache, each with its batch scheduler.

A base model and every LoRA adapter used with it share one copy of the base
weights (PEFT multi-adapter). Requests for one model decode together in its
BatchScheduler whatever their adapters: each row names its adapter, PEFT
applies it to that row only. Adapters are named by their artifact's digest,
so two registry versions with the same weights share one copy and changed
weights under a reused name can never be served stale.

An adapter's files are read outside the model lock; only attaching the read
weights stops the model's batch, for milliseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common import datasets
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.generation import eos_ids
from services.common.modeling import (
    check_adapter_base,
    load_causal_lm,
    load_tokenizer,
    require_safetensors_adapter,
)
from services.inference.batch import BASE_ADAPTER
from services.inference.engine import Engine, Resolver
from services.inference.requests import GenerationRequest
from services.inference.sampling import RowSampler
from services.inference.scheduler import BatchScheduler, SchedulerSettings, Sequence

log = logging.getLogger(__name__)

# Prompts longer than this many characters per context token are refused
# before tokenizing (no tokenizer packs more into one token).
MAX_CHARS_PER_TOKEN = 32


@dataclass
class LoadedModel:
    artifact: Any
    model: Any
    tokenizer: Any
    scheduler: BatchScheduler
    context_tokens: int | None  # the model's positions; None if it has no limit
    eos: frozenset[int]
    adapters: dict[str, Any] = field(default_factory=dict)  # adapter id -> artifact
    names: dict[str, str] = field(default_factory=dict)  # digest -> PEFT name
    gates: dict[str, threading.Lock] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def adapter_name(self, adapter_id: str) -> str:
        if not adapter_id:
            return BASE_ADAPTER
        return self.names[self.adapters[adapter_id].digest]


def _peft_name(digest: str) -> str:
    return "d_" + "".join(c for c in digest if c.isalnum())[:40]


def context_of(model: Any) -> int | None:
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class TorchEngine(Engine):
    """Holds up to `max_models` models; the least recently used is unloaded first."""

    def __init__(
        self,
        resolve: Resolver,
        device: str,
        max_models: int,
        max_new_tokens_limit: int,
        settings: SchedulerSettings = SchedulerSettings(),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve = resolve
        self._device = device
        self._max_models = max(1, max_models)
        self.max_new_tokens_limit = max_new_tokens_limit
        self._settings = settings
        self._clock = clock
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def now(self) -> float:
        return self._clock()

    # --- loading --------------------------------------------------------------------
    def load(self, model_id: str, adapter_id: str = "") -> LoadedModel:
        with self._lock:
            entry = self._models.get(model_id)
            if entry is not None:
                self._models.move_to_end(model_id)
        if entry is None:
            artifact = self._resolve(model_id)
            if artifact.kind_name not in ("BASE_MODEL", "MERGED_MODEL"):
                raise FailedPrecondition(
                    f"{model_id} is a {artifact.kind_name}, not a servable model; "
                    "pass adapters as adapter_id with their base model as model_id"
                )
            entry = self._load_model(artifact)
        if adapter_id and adapter_id not in entry.adapters:
            self._attach_adapter(entry, adapter_id)
        return entry

    def _load_model(self, artifact: Any) -> LoadedModel:
        with self._lock:
            gate = self._loading.setdefault(artifact.id, threading.Lock())
        with gate:  # one loader per model; others wait for it
            with self._lock:
                if artifact.id in self._models:
                    return self._models[artifact.id]
            started = time.perf_counter()
            path = Path(artifact.local_path)
            model = load_causal_lm(path, self._device)
            model.eval()
            tokenizer = load_tokenizer(path)
            entry = LoadedModel(
                artifact=artifact,
                model=model,
                tokenizer=tokenizer,
                scheduler=BatchScheduler(
                    artifact.id, model, tokenizer, self._settings, clock=self._clock
                ),
                context_tokens=context_of(model),
                eos=frozenset(eos_ids(model, tokenizer)),
            )
            log.info(
                "loaded %s (%s) in %.1fs",
                artifact.id,
                artifact.name,
                time.perf_counter() - started,
            )
            with self._lock:
                self._models[artifact.id] = entry
                evicted = []
                while len(self._models) > self._max_models:
                    evicted.append(self._models.popitem(last=False)[1])
                self._loading.pop(artifact.id, None)
            for old in evicted:
                log.info("unloaded %s (least recently used)", old.artifact.id)
                old.scheduler.close()
            return entry

    def _attach_adapter(self, entry: LoadedModel, adapter_id: str) -> None:
        adapter = self._resolve(adapter_id)
        if adapter.kind_name != "ADAPTER":
            raise FailedPrecondition(
                f"{adapter_id} is a {adapter.kind_name}, not an adapter"
            )
        check_adapter_base(adapter, entry.artifact)
        with entry.scheduler.model_lock:
            gate = entry.gates.setdefault(adapter.digest, threading.Lock())
        with gate:  # one loader per adapter digest
            if adapter.digest not in entry.names:
                self._read_and_attach(entry, adapter)
        entry.adapters[adapter_id] = adapter

    def _read_and_attach(self, entry: LoadedModel, adapter: Any) -> None:
        from peft import PeftConfig, PeftModel, set_peft_model_state_dict
        from peft.utils import load_peft_weights

        path = Path(adapter.local_path)
        require_safetensors_adapter(path)
        config = PeftConfig.from_pretrained(str(path))
        config.inference_mode = True
        device = str(next(entry.model.parameters()).device)
        weights = load_peft_weights(str(path), device=device)  # outside the lock
        name = _peft_name(adapter.digest)
        started = time.perf_counter()
        with entry.scheduler.model_lock:
            if isinstance(entry.model, PeftModel):
                entry.model.add_adapter(name, config)
            else:
                entry.model = PeftModel(entry.model, config, adapter_name=name)
            loaded = set_peft_model_state_dict(entry.model, weights, adapter_name=name)
            stray = [k for k in loaded.unexpected_keys if "lora_" in k]
            if stray:
                entry.model.delete_adapter(name)
                raise FailedPrecondition(
                    f"adapter {adapter.id} does not fit model {entry.artifact.id}: "
                    f"{len(stray)} weights match no layer (e.g. {stray[0]})"
                )
            entry.model.eval()
            entry.scheduler.model = entry.model
            entry.names[adapter.digest] = name
        log.info(
            "attached adapter %s to %s (model paused %.1f ms)",
            adapter.id,
            entry.artifact.id,
            (time.perf_counter() - started) * 1000.0,
        )

    def unload(self, model_id: str) -> bool:
        with self._lock:
            entry = self._models.pop(model_id, None)
        if entry is None:
            return False
        entry.scheduler.close()
        return True

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._models.values())

    def close(self) -> None:
        with self._lock:
            entries = list(self._models.values())
            self._models.clear()
        for entry in entries:
            entry.scheduler.close()

    # --- generation -----------------------------------------------------------------
    def submit(
        self,
        model_id: str,
        adapter_id: str,
        req: GenerationRequest,
        deadline: float | None = None,
    ) -> Sequence:
        req.check(self.max_new_tokens_limit)
        entry = self.load(model_id, adapter_id)
        ids = self._tokenize(entry, req)
        seq = Sequence(
            input_ids=ids,
            adapter=entry.adapter_name(adapter_id),
            max_new_tokens=req.max_new_tokens,
            sampler=RowSampler(req.temperature, req.top_p, req.seed),
            eos=entry.eos,
            stop=tuple(s for s in req.stop if s),
            deadline=deadline,
        )
        return entry.scheduler.submit(seq)

    def _tokenize(self, entry: LoadedModel, req: GenerationRequest) -> list[int]:
        limit = entry.context_tokens
        chars = len(req.prompt) + sum(len(m["content"]) for m in req.messages)
        if limit is not None and chars > limit * MAX_CHARS_PER_TOKEN:
            raise InvalidArgument(
                f"the prompt has {chars} characters, more than model "
                f"{entry.artifact.id}'s context of {limit} tokens can hold; "
                "shorten it",
                field="params.prompt",
            )
        if req.raw:
            text = req.prompt
        else:
            messages = req.messages or [{"role": "user", "content": req.prompt}]
            text = datasets.render_prompt(entry.tokenizer, messages)
        ids = entry.tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InvalidArgument("the prompt is empty", field="params.prompt")
        if limit is not None and len(ids) + req.max_new_tokens > limit:
            raise InvalidArgument(
                f"prompt tokens ({len(ids)}) plus max_new_tokens "
                f"({req.max_new_tokens}) = {len(ids) + req.max_new_tokens} exceed "
                f"model {entry.artifact.id}'s context of {limit} tokens; shorten "
                "the prompt or lower params.max_new_tokens",
                field="params.max_new_tokens",
            )
        return ids

    def stats(self) -> dict[str, Any]:
        out = {}
        for entry in self.loaded():
            waiting, decoding = entry.scheduler.pending()
            out[entry.artifact.id] = {
                "waiting": waiting,
                "decoding": decoding,
                "steps": entry.scheduler.steps,
                "adapters": len(entry.names),
            }
        return out
