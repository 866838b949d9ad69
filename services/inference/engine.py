"""What the inference service asks of an engine, whichever engine it is.

An engine loads models (and adapters on them), takes generation requests
(`submit` returns at once with a handle the caller reads results from or
cancels), may classify texts with sequence classifiers (`classify`), and
reports what it holds. The servicer speaks only to this
interface, so an engine built on another runtime (vLLM with LoRA, say, for
GPU fleets) plugs in beside the torch one: `ENGINES` names them and the
`inference_engine` setting picks one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.common.errors import FailedPrecondition
from services.inference.classify import Classification, ClassifyRequest
from services.inference.requests import GenerationRequest, GenerationResult
from services.inference.stats import ServingStats

# Resolves a registry id to its Artifact (an ArtifactRef: id, kind, path, digest…).
Resolver = Callable[[str], Any]


@dataclass(frozen=True)
class ArtifactRef:
    """The facts about a registry artifact an engine needs, without protobuf."""

    id: str
    name: str
    kind_name: str
    local_path: str
    digest: str
    metadata: dict[str, Any]
    # The project owning the artifact: callers need GENERATE there.
    project: str = "default"


@dataclass
class AdapterInfo:
    """An adapter loaded on a model, as ListLoadedModels shows it."""

    adapter_ids: list[str]
    digest: str
    bytes: int
    hits: int
    loads: int
    last_used: float  # epoch seconds
    pinned: bool
    active_requests: int
    stats: ServingStats
    labels: list[str] = field(default_factory=list)  # a classification adapter's


@dataclass
class ModelInfo:
    """A loaded model, its adapters and what it served."""

    model_id: str
    kind_name: str  # BASE_MODEL | MERGED_MODEL
    name: str
    parameters: int
    device: str
    bytes: int
    pinned: bool
    last_used: float
    queued_requests: int
    batch_rows: int
    decode_steps: int
    mean_batch_rows: float
    base_stats: ServingStats
    adapters: list[AdapterInfo] = field(default_factory=list)
    task: str = "causal"  # or "classification": a merged classifier
    labels: list[str] = field(default_factory=list)  # a merged classifier's


class Handle(Protocol):
    """One submitted request."""

    def results(self) -> Iterator[tuple[str, Any]]:
        """(text delta, None) as text appears, then ("", final); raises the
        request's error (CANCELLED, DEADLINE_EXCEEDED, ...)."""

    def cancel(self) -> None:
        """The caller is gone: stop working on it."""


class Engine(abc.ABC):
    """The interface; generate/stream are built on submit for every engine."""

    max_new_tokens_limit: int

    @property
    @abc.abstractmethod
    def max_admitted(self) -> int:
        """The most requests it holds at once (queued or running): the server
        sizes its thread pool above this, so health checks always get one."""

    def describe(self) -> str:
        """One line for the start-up log."""
        return type(self).__name__

    @abc.abstractmethod
    def load(self, model_id: str, adapter_id: str = "", pin: bool = False) -> ModelInfo:
        """Loads a model (and an adapter on it) now, and describes it. `pin`
        keeps the adapter (or, without one, the model) loaded."""

    @abc.abstractmethod
    def unload(self, model_id: str, adapter_id: str = "") -> bool:
        """Drops a model, or one adapter of it; False if it was not loaded."""

    @abc.abstractmethod
    def loaded(self) -> list[ModelInfo]:
        """The loaded models, least recently used first, with their adapters
        and statistics (queue, batch occupancy, per-adapter serving)."""

    @abc.abstractmethod
    def submit(
        self,
        model_id: str,
        adapter_id: str,
        req: GenerationRequest,
        deadline: float | None = None,
    ) -> Handle:
        """Queues a request; `deadline` is on the engine's clock (`now()`)."""

    def classify(
        self,
        model_id: str,
        adapter_id: str,
        req: ClassifyRequest,
        deadline: float | None = None,
        watch: Callable[[Callable[[], None]], Any] | None = None,
    ) -> Classification:
        """Classifies `req.texts` with a merged classifier (`model_id`) or a
        classification adapter on its base; `watch` as for generate."""
        raise FailedPrecondition(
            f"the {type(self).__name__} engine serves no classifiers; run the "
            "inference service with inference_engine torch to call Classify"
        )

    @abc.abstractmethod
    def now(self) -> float:
        """The engine's clock, which deadlines are measured on."""

    @abc.abstractmethod
    def close(self) -> None:
        """Ends every request still running (CANCELLED) and frees the models."""

    # --- built on submit ------------------------------------------------------------
    def generate(
        self,
        model_id: str,
        adapter_id: str,
        req: GenerationRequest,
        deadline: float | None = None,
        watch: Callable[[Callable[[], None]], Any] | None = None,
    ) -> GenerationResult:
        """The whole text at once. `watch(cancel)` lets the caller's transport
        call `cancel` when the caller goes away (gRPC: `context.add_callback`)."""
        last: Any = None
        for _, final in self.stream(model_id, adapter_id, req, deadline, watch):
            last = final if final is not None else last
        return last

    def stream(
        self,
        model_id: str,
        adapter_id: str,
        req: GenerationRequest,
        deadline: float | None = None,
        watch: Callable[[Callable[[], None]], Any] | None = None,
    ) -> Iterator[tuple[str, GenerationResult | None]]:
        handle = self.submit(model_id, adapter_id, req, deadline)
        if watch is not None:
            watch(handle.cancel)
        finished = False
        try:
            for delta, final in handle.results():
                if final is None:
                    yield delta, None
                else:
                    finished = True
                    yield "", final
        finally:
            if not finished:  # the reader stopped early (a cancelled stream)
                handle.cancel()
