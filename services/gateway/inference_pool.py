"""The gateway's inference client across replicas (issue 11, item 4).

Every call the gateway makes to inference (routed generations, shadow
copies, deploy and rollout loads, blue-green warm-ups) goes through one
`InferencePool`, which stands in for a single inference client: same
methods, same domain errors. Each call is keyed by its (model, adapter) and
sent to that key's replica (`ReplicaChooser`: rendezvous hashing with
bounded load), so an adapter stays hot on one replica, or a few under heavy
load, instead of being loaded on all of them. Names and aliases are resolved
to ids first (`RefResolver`), so a deploy by name loads the model where the
requests routed by id will go.

A replica that answers UNAVAILABLE (not running, unreachable) is skipped for
`cooldown_s`, then one request tries it again; meanwhile only its own keys
move, each to the next replica in that key's ranking. A call that failed
with UNAVAILABLE or RESOURCE_EXHAUSTED (that replica's queue is full) before
any output is retried on the next replica; a stream that has already sent
output is never retried (the caller has part of an answer). With one
replica this is exactly a plain client.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry import trace

from lorafleet.v1 import registry_pb2
from services.common.clients import ServiceClient
from services.common.config import Config, ConfigError
from services.common.errors import LorafleetError, ResourceExhausted, Unavailable
from services.gateway.replicas import ReplicaChooser

log = logging.getLogger(__name__)

# Errors after which another replica may well succeed.
_RETRYABLE = (Unavailable, ResourceExhausted)


# Registry ids (uuid4 hex); anything else is a name, "name:version" or
# "name@alias" that the registry resolves to one.
_ID_RE = re.compile(r"[0-9a-f]{32}")
_MAX_RESOLVED = 4096


class RefResolver:
    """Names and aliases to artifact ids, so a deploy by name and the routed
    requests that follow (by id) share one affinity key and one replica.

    Ids pass through untouched; other references are asked of the registry
    and kept for `ttl_s` (an alias can move). When the registry cannot say
    (down, unknown name) the reference is used as it is: affinity suffers a
    little, the request does not, and inference reports a bad reference
    in its own words.
    """

    def __init__(
        self,
        registry: Any | None,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, ref: str) -> str:
        if not ref or self._registry is None or _ID_RE.fullmatch(ref):
            return ref
        now = self._clock()
        with self._lock:
            hit = self._cache.get(ref)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        try:
            resolved = self._registry.GetArtifact(
                registry_pb2.GetArtifactRequest(id=ref)
            ).artifact.id
        except LorafleetError:
            return ref
        with self._lock:
            if len(self._cache) >= _MAX_RESOLVED:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            self._cache[ref] = (now, resolved)
        return resolved


class InferencePool:
    def __init__(
        self,
        clients: dict[str, Any],
        *,
        cooldown_s: float = 5.0,
        min_bound: int = 8,
        clock: Callable[[], float] = time.monotonic,
        resolve: Callable[[str], str] = lambda ref: ref,
    ) -> None:
        if not clients:
            raise ValueError("at least one inference replica is needed")
        self._clients = dict(clients)
        self._resolve = resolve
        self._chooser = ReplicaChooser(list(clients), min_bound=min_bound)
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._down: dict[str, float] = {}  # replica -> when it was marked down
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config, registry: Any | None = None) -> InferencePool:
        addresses = config.inference_addresses()
        if config.inference_replica_cooldown_s <= 0:
            raise ConfigError(
                "inference_replica_cooldown_s must be positive, got "
                f"{config.inference_replica_cooldown_s:g}"
            )
        return cls(
            {
                a: ServiceClient("inference", config, address=a, caller="gateway")
                for a in addresses
            },
            cooldown_s=config.inference_replica_cooldown_s,
            # A replica batches this many requests at no extra cost.
            min_bound=config.inference_max_batch,
            resolve=RefResolver(registry, config.inference_resolve_ttl_s),
        )

    def key_of(self, request: Any) -> str:
        """The affinity key: requests for one (model, adapter) share a
        replica, however each names them."""
        if len(self._clients) == 1:
            return ""  # one replica: nothing to choose, nothing to resolve
        model, adapter = request.model_id, request.adapter_id
        return f"{self._resolve(model)}/{self._resolve(adapter)}"

    # --- the inference methods the gateway calls ------------------------------
    def Generate(self, request: Any, timeout: float | None = None) -> Any:
        (response,) = self._failover(
            self.key_of(request),
            lambda client: [client.Generate(request, timeout=timeout)],
        )
        return response

    def GenerateStream(self, request: Any, timeout: float | None = None) -> Iterator:
        return self._failover(
            self.key_of(request),
            lambda client: client.GenerateStream(request, timeout=timeout),
        )

    def LoadModel(self, request: Any, timeout: float | None = None) -> Any:
        """Loads on the key's replica: where its requests will go."""
        key, resting = self.key_of(request), self._resting()
        ranking = self._chooser.rank(key)
        last: LorafleetError | None = None
        for replica in sorted(ranking, key=lambda r: r in resting):  # live first
            self._annotate(replica)
            try:
                return self._clients[replica].LoadModel(request, timeout=timeout)
            except Unavailable as exc:
                self._mark_down(replica, exc)
                last = exc
        assert last is not None
        raise last

    # --- state ---------------------------------------------------------------
    @property
    def replicas(self) -> list[str]:
        return list(self._clients)

    def in_flight(self) -> dict[str, int]:
        return self._chooser.in_flight()

    def live(self) -> list[str]:
        """The replicas requests go to now (all of them when all rest)."""
        resting = self._resting()
        return [r for r in self._clients if r not in resting] or list(self._clients)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    # --- internals -----------------------------------------------------------
    def _failover(self, key: str, call: Callable[[Any], Iterable]) -> Iterator:
        """What `call(client)` yields, from the first replica that answers.

        Replicas are tried in `key`'s order, live ones first, each held in
        flight while tried; after UNAVAILABLE or RESOURCE_EXHAUSTED the next
        one is tried, unless output was already passed on (the caller has
        part of an answer: never start it again elsewhere).
        """
        tried: frozenset[str] = frozenset()
        last: LorafleetError | None = None
        while (replica := self._acquire(key, tried)) is not None:
            sent = False
            self._annotate(replica)
            try:
                for item in call(self._clients[replica]):
                    sent = True
                    yield item
                return
            except _RETRYABLE as exc:
                if sent:
                    raise
                if isinstance(exc, Unavailable):
                    self._mark_down(replica, exc)
                last, tried = exc, tried | {replica}
            finally:
                self._chooser.release(replica)
        assert last is not None  # the first attempt always has a replica
        raise last

    def _acquire(self, key: str, tried: frozenset[str]) -> str | None:
        """A live replica not yet tried; failing that, a resting one (it may
        be back before its cooldown is over); None when all were tried."""
        return self._chooser.acquire(
            key, exclude=tried | self._resting()
        ) or self._chooser.acquire(key, exclude=tried)

    def _resting(self) -> frozenset[str]:
        """Replicas marked down less than `cooldown_s` ago; older marks go
        (half-open: the next request tries that replica again)."""
        now = self._clock()
        with self._lock:
            for replica, since in list(self._down.items()):
                if now - since >= self._cooldown_s:
                    del self._down[replica]
            return frozenset(self._down)

    def _mark_down(self, replica: str, exc: LorafleetError) -> None:
        with self._lock:
            first = replica not in self._down
            self._down[replica] = self._clock()
        if first and len(self._clients) > 1:
            log.warning(
                "inference replica %s is unavailable (%s); its adapters move to "
                "the next replica for %gs",
                replica,
                exc.message,
                self._cooldown_s,
            )

    def _annotate(self, replica: str) -> None:
        if len(self._clients) > 1:
            trace.get_current_span().set_attribute(
                "lorafleet.inference_replica", replica
            )
