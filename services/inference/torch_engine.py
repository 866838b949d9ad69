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

from services.common.errors import (
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)
from services.common.generation import eos_ids
from services.common.modeling import (
    check_adapter_base,
    load_causal_lm,
    load_tokenizer,
    require_safetensors_adapter,
)
from services.inference import lora_rows
from services.inference.adapters import AdapterCache, AdapterSlot
from services.inference.batch import BASE_ADAPTER
from services.inference.engine import AdapterInfo, Engine, ModelInfo, Resolver
from services.inference.prompting import context_of, prompt_ids
from services.inference.requests import GenerationRequest
from services.inference.sampling import RowSampler
from services.inference.scheduler import BatchScheduler, SchedulerSettings, Sequence
from services.inference.stats import ServingStats

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    artifact: Any
    model: Any
    tokenizer: Any
    scheduler: BatchScheduler
    context_tokens: int | None  # the model's positions; None if it has no limit
    eos: frozenset[int]
    parameters: int = 0
    bytes: int = 0  # its own weights (adapters not included)
    pinned: bool = False
    last_used: float = 0.0  # wall clock
    base_stats: ServingStats = field(default_factory=ServingStats)
    gates: dict[str, threading.Lock] = field(default_factory=dict)  # per digest


def _peft_name(digest: str) -> str:
    return "d_" + "".join(c for c in digest if c.isalnum())[:40]


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
        adapter_budget_bytes: int = 1 << 30,
        resolve_ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolve_remote = resolve
        self._resolve_ttl = resolve_ttl_s
        self._resolved: dict[str, tuple[float, Any]] = {}
        self.adapters = AdapterCache(adapter_budget_bytes)
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

    @property
    def max_admitted(self) -> int:
        return self._max_models * (self._settings.max_queue + self._settings.max_batch)

    def describe(self) -> str:
        import torch

        return (
            f"{torch.get_num_threads()} CPU thread(s) per op, device {self._device}, "
            f"batches of {self._settings.max_batch}, queue {self._settings.max_queue}"
        )

    def _resolve(self, artifact_id: str) -> Any:
        """The registry's record of an artifact, read at most every
        `resolve_ttl_s` (a registry id always names the same weights; the
        re-read only notices an archived artifact)."""
        now = self._clock()
        hit = self._resolved.get(artifact_id)
        if hit is not None and now - hit[0] < self._resolve_ttl:
            return hit[1]
        artifact = self._resolve_remote(artifact_id)
        self._resolved[artifact_id] = (now, artifact)
        if len(self._resolved) > 4096:  # a bound: start again (reads are cheap)
            self._resolved = {artifact_id: (now, artifact)}
        return artifact

    # --- loading --------------------------------------------------------------------
    def load(self, model_id: str, adapter_id: str = "", pin: bool = False) -> ModelInfo:
        entry = self._model(model_id)
        if adapter_id:
            slot = self._adapter(entry, adapter_id)
            if pin:
                self.adapters.pin(model_id, slot.digest)
            self.adapters.release(slot)
        elif pin:
            entry.pinned = True
        return self._info(entry)

    def _info(self, entry: LoadedModel) -> ModelInfo:
        sched = entry.scheduler
        waiting, decoding = sched.pending()
        return ModelInfo(
            model_id=entry.artifact.id,
            kind_name=entry.artifact.kind_name,
            name=entry.artifact.name,
            parameters=entry.parameters,
            device=str(next(entry.model.parameters()).device),
            bytes=entry.bytes,
            pinned=entry.pinned,
            last_used=entry.last_used,
            queued_requests=waiting,
            batch_rows=decoding,
            decode_steps=sched.steps,
            mean_batch_rows=sched.rows_stepped / sched.steps if sched.steps else 0.0,
            base_stats=entry.base_stats,
            adapters=[
                AdapterInfo(
                    adapter_ids=sorted(slot.ids),
                    digest=slot.digest,
                    bytes=slot.bytes,
                    hits=slot.hits,
                    loads=slot.loads,
                    last_used=slot.last_used,
                    pinned=slot.pinned,
                    active_requests=slot.active,
                    stats=slot.stats,
                )
                for slot in self.adapters.of_model(entry.artifact.id)
            ],
        )

    def _model(self, model_id: str) -> LoadedModel:
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
        entry.last_used = time.time()
        return entry

    def _adapter(self, entry: LoadedModel, adapter_id: str) -> AdapterSlot:
        """The adapter's slot on the model, loaded if need be, in use by the
        caller (release it when done)."""
        adapter = self._resolve(adapter_id)
        if adapter.kind_name != "ADAPTER":
            raise FailedPrecondition(
                f"{adapter_id} is a {adapter.kind_name}, not an adapter"
            )
        model_id = entry.artifact.id
        loaded = False
        for _ in range(3):  # a load racing an eviction: load again
            slot = self.adapters.acquire(
                model_id, adapter.digest, adapter_id, hit=not loaded
            )
            if slot is not None:
                return slot
            check_adapter_base(adapter, entry.artifact)
            with entry.scheduler.model_lock:
                gate = entry.gates.setdefault(adapter.digest, threading.Lock())
            with gate:  # one loader per adapter digest
                if self.adapters.get(model_id, adapter.digest) is None:
                    self._read_and_attach(entry, adapter)
                    loaded = True
        raise Unavailable(
            f"adapter {adapter_id} was evicted as fast as it loaded; the adapter "
            "budget is too small for the traffic (inference_adapter_budget_mb)"
        )

    def _load_model(self, artifact: Any) -> LoadedModel:
        with self._lock:
            gate = self._loading.setdefault(artifact.id, threading.Lock())
        with gate:  # one loader per model; others wait for it
            with self._lock:
                if artifact.id in self._models:
                    return self._models[artifact.id]
                self._check_room(artifact.id)  # before the costly load
            started = time.perf_counter()
            path = Path(artifact.local_path)
            model = load_causal_lm(path, self._device)
            model.eval()
            tokenizer = load_tokenizer(path)
            weights = list(model.parameters())
            entry = LoadedModel(
                parameters=sum(p.numel() for p in weights),
                bytes=sum(p.numel() * p.element_size() for p in weights),
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
                self._loading.pop(artifact.id, None)
                try:
                    unpinned, over = self._check_room(artifact.id)
                except ResourceExhausted:  # pinned by others while it loaded
                    entry.scheduler.close()
                    raise
                evicted = [self._models.pop(k) for k in unpinned[: max(0, over)]]
                self._models[artifact.id] = entry
            for old in evicted:
                log.info("unloaded %s (least recently used)", old.artifact.id)
                self.adapters.drop_model(old.artifact.id)
                old.scheduler.close()
            return entry

    def _check_room(self, model_id: str) -> tuple[list[str], int]:
        """(unpinned models, how many must leave) for one more model; refuses
        when the pinned ones leave no room. Under the lock."""
        unpinned = [k for k, e in self._models.items() if not e.pinned]
        over = len(self._models) + 1 - self._max_models
        if over > len(unpinned):
            raise ResourceExhausted(
                f"cannot load {model_id}: all {len(self._models)} loaded models "
                f"are pinned (max_loaded_models {self._max_models}); unload one "
                "or raise the limit",
                quota_subject="inference max_loaded_models",
            )
        return unpinned, over

    def _read_and_attach(self, entry: LoadedModel, adapter: Any) -> None:
        from peft import PeftConfig, PeftModel, set_peft_model_state_dict
        from peft.utils import load_peft_weights

        path = Path(adapter.local_path)
        require_safetensors_adapter(path)
        config = PeftConfig.from_pretrained(str(path))
        config.inference_mode = True
        device = str(next(entry.model.parameters()).device)
        weights = load_peft_weights(str(path), device=device)  # outside the lock
        size = sum(t.numel() * t.element_size() for t in weights.values())
        for old in self.adapters.make_room(size, f"adapter {adapter.id}"):
            self._delete_weights(old)
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
            lora_rows.install(entry.model)  # new LoRA layers too (idempotent)
            plain = entry.model.__dict__.setdefault("lorafleet_plain", set())
            if lora_rows.plain_adapter(config):
                plain.add(name)
            entry.scheduler.model = entry.model
        self.adapters.add(
            AdapterSlot(
                entry.artifact.id,
                adapter.digest,
                name,
                size,
                {adapter.id},
                solo=bool(getattr(config, "use_dora", False)),
            )
        )
        log.info(
            "attached adapter %s to %s (model paused %.1f ms)",
            adapter.id,
            entry.artifact.id,
            (time.perf_counter() - started) * 1000.0,
        )

    def _delete_weights(self, slot: AdapterSlot) -> None:
        """Frees an adapter the cache let go of (evicted or unloaded)."""
        with self._lock:
            entry = self._models.get(slot.model_id)
        if entry is None:
            return  # its model left memory, and the adapter with it
        with entry.scheduler.model_lock:
            if slot.name in getattr(entry.model, "peft_config", {}):
                entry.model.delete_adapter(slot.name)
            entry.model.__dict__.get("lorafleet_plain", set()).discard(slot.name)
            entry.scheduler.prefixes.clear_adapter(slot.name)
        log.info("unloaded adapter %s from %s", slot.digest, slot.model_id)

    def unload(self, model_id: str, adapter_id: str = "") -> bool:
        if adapter_id:
            with self._lock:
                loaded = model_id in self._models
            if not loaded:
                return False
            digest = self._resolve(adapter_id).digest
            if self.adapters.get(model_id, digest) is None:
                return False
            self._delete_weights(self.adapters.remove(model_id, digest))
            return True
        with self._lock:
            entry = self._models.pop(model_id, None)
        if entry is None:
            return False
        self.adapters.drop_model(model_id)
        entry.scheduler.close()
        return True

    def loaded(self) -> list[ModelInfo]:
        return [self._info(entry) for entry in self.entries()]

    def entries(self) -> list[LoadedModel]:
        """The loaded models' own records (tests reach their schedulers)."""
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
        entry = self._model(model_id)
        ids = prompt_ids(entry.tokenizer, req, entry.context_tokens, entry.artifact.id)
        slot = self._adapter(entry, adapter_id) if adapter_id else None
        try:
            seq = Sequence(
                input_ids=ids,
                adapter=slot.name if slot else BASE_ADAPTER,
                solo=bool(slot and slot.solo),
                max_new_tokens=req.max_new_tokens,
                sampler=RowSampler(req.temperature, req.top_p, req.seed),
                eos=entry.eos,
                stop=tuple(s for s in req.stop if s),
                deadline=deadline,
                on_end=self._ended(entry, slot),
            )
            return entry.scheduler.submit(seq)
        except BaseException:
            if slot is not None:
                self.adapters.release(slot)
            raise

    def _ended(self, entry: LoadedModel, slot: AdapterSlot | None):
        def ended(seq: Sequence, outcome: Any) -> None:
            if slot is None:
                entry.base_stats.record(seq, outcome)
            else:
                slot.stats.record(seq, outcome)
                self.adapters.release(slot)

        return ended
