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
from pathlib import Path
from typing import Any

from services.common.adapter_base import check_adapter_base
from services.common.auth.caller import require
from services.common.auth.permissions import GENERATE
from services.common.errors import (
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
)
from services.common.modeling import (
    classifier_model_labels,
    is_classification_adapter,
)
from services.inference.adapters import AdapterCache, AdapterSlot
from services.inference.attach import attach, detach, read_adapter
from services.inference.batch import BASE_ADAPTER
from services.inference.classify import (
    Classification,
    ClassifyRequest,
    Limits,
    classify_texts,
    text_ids,
)
from services.inference.engine import Engine, ModelInfo, Resolver
from services.inference.loaded import (
    LoadedModel,
    check_classify_target,
    load_model,
    model_info,
    peft_name,
    refuse_generation,
    wrong_adapter_kind,
)
from services.inference.prompting import prompt_ids
from services.inference.requests import GenerationRequest
from services.inference.sampling import RowSampler
from services.inference.scheduler import SchedulerSettings, Sequence

log = logging.getLogger(__name__)

MODEL_KINDS = ("BASE_MODEL", "MERGED_MODEL")


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
        # Classify calls running at once (each holds a server thread).
        self._classifying = threading.BoundedSemaphore(settings.max_queue)

    def now(self) -> float:
        return self._clock()

    @property
    def max_admitted(self) -> int:
        per_model = self._settings.max_queue + self._settings.max_batch
        return self._max_models * per_model + self._settings.max_queue  # + Classify

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
            # Cached for speed, not for access: the caller's project is checked
            # on every request.
            project = getattr(hit[1], "project", "default")
            require(GENERATE, project, f"artifact {artifact_id}")
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
        return model_info(entry, self.adapters.of_model(entry.artifact.id))

    def _model(self, model_id: str) -> LoadedModel:
        with self._lock:
            entry = self._models.get(model_id)
            if entry is not None:
                self._models.move_to_end(model_id)
        if entry is None:
            artifact = self._resolve(model_id)
            if artifact.kind_name not in MODEL_KINDS:
                raise FailedPrecondition(
                    f"{model_id} is a {artifact.kind_name}, not a servable model; "
                    "pass adapters as adapter_id with their base model as model_id"
                )
            entry = self._load_model(artifact)
        entry.last_used = time.time()
        return entry

    def _adapter(
        self, entry: LoadedModel, adapter_id: str, classify: bool | None = None
    ) -> AdapterSlot:
        """The adapter's slot on the model, loaded if need be, in use by the
        caller (release it when done). `classify` True/False: refuse (before
        loading it) a causal-LM / classification adapter."""
        entry.refuse_adapters()
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
                if classify is not None and bool(slot.labels) != classify:
                    self.adapters.release(slot)
                    raise wrong_adapter_kind(adapter_id, bool(slot.labels))
                return slot
            check_adapter_base(adapter, entry.artifact)
            path = Path(adapter.local_path)
            classifies = is_classification_adapter(path, adapter.metadata)
            if classify is not None and classifies != classify:
                raise wrong_adapter_kind(adapter_id, classifies)
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
            entry = load_model(artifact, self._device, self._settings, self._clock)
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
        read = read_adapter(entry, adapter)  # outside the lock
        for old in self.adapters.make_room(read.size, f"adapter {adapter.id}"):
            self._delete_weights(old)
        started = time.perf_counter()
        self.adapters.add(attach(entry, read, peft_name(adapter.digest)))
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
        detach(entry, slot)
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
        refuse_generation(model_id, self._labels_of(model_id))
        entry = self._model(model_id)
        ids = prompt_ids(entry.tokenizer, req, entry.context_tokens, entry.artifact.id)
        slot = self._adapter(entry, adapter_id, classify=False) if adapter_id else None
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

    # --- classification -------------------------------------------------------------
    def classify(
        self,
        model_id: str,
        adapter_id: str,
        req: ClassifyRequest,
        deadline: float | None = None,
        watch: Callable[[Callable[[], None]], Any] | None = None,
    ) -> Classification:
        req.check()
        if not self._classifying.acquire(blocking=False):
            raise ResourceExhausted(
                f"{self._settings.max_queue} Classify calls are already running; "
                "retry shortly, or raise inference_max_queue",
                retry_after_s=self._settings.retry_after_s,
                quota_subject="inference Classify calls",
            )
        cancelled = threading.Event()
        if watch is not None:
            watch(cancelled.set)
        slot = None
        try:
            check_classify_target(model_id, adapter_id, self._labels_of(model_id))
            entry = self._model(model_id)
            ids = text_ids(entry.tokenizer, req.texts, entry.context_tokens, model_id)
            slot = self._adapter(entry, adapter_id, True) if adapter_id else None
            stats = slot.stats if slot is not None else entry.base_stats
            limits = Limits(
                self._settings.max_batch,
                self._settings.prefill_tokens_per_step,
                entry.context_tokens,
            )
            try:
                result = classify_texts(
                    ids,
                    *entry.classifier(slot),
                    entry.scheduler.model_lock,
                    limits=limits,
                    deadline=deadline,
                    clock=self._clock,
                    cancelled=cancelled,
                )
            except BaseException as exc:
                stats.record_classify(exc)
                raise
            stats.record_classify(result)
            return result
        finally:
            if slot is not None:
                self.adapters.release(slot)
            self._classifying.release()

    def _labels_of(self, model_id: str) -> list[str] | None:
        """A merged classifier's labels, None for a causal LM: from the loaded
        model, else from its files (so a call of the wrong kind loads nothing)."""
        with self._lock:
            entry = self._models.get(model_id)
        if entry is not None:
            return entry.labels or None
        artifact = self._resolve(model_id)
        if artifact.kind_name not in MODEL_KINDS:
            return None  # _model refuses it, naming its kind
        return classifier_model_labels(Path(artifact.local_path))
