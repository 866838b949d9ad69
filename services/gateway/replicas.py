"""Choosing the inference replica for a request: adapter affinity, bounded load.

Each (model, adapter) ranks the replicas by a hash of the pair and the
replica's address (rendezvous hashing): every gateway replica ranks them
alike with no shared state, an adapter stays hot on the replica at the top
of its ranking, and a replica that drops out only moves the adapters it was
serving (everyone else's top replica is unchanged). So that one popular
adapter cannot swamp its replica, no replica takes more than
max(min_bound, ceil((1 + epsilon) x average)) of the requests in flight;
past that a request goes to the next replica in its ranking (consistent
hashing with bounded loads, Mirrokni, Thorup and Zadimoghaddam 2018).
`min_bound` (a replica's batch size) keeps a few concurrent requests of one
adapter together rather than spreading them from the second one on.

`inference_pool.InferencePool` uses this for every call the gateway makes to
inference.
"""

from __future__ import annotations

import hashlib
import math
import threading


def score(key: str, replica: str) -> int:
    digest = hashlib.sha256(f"{key}\0{replica}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


class ReplicaChooser:
    """Rendezvous ranking over a fixed list of replicas, with loads in flight.

    Replicas that are down are not removed but excluded per call (`exclude`),
    so their loads and everyone's ranking carry over when they come back.
    """

    def __init__(
        self, replicas: list[str], epsilon: float = 0.25, min_bound: int = 8
    ) -> None:
        if not replicas:
            raise ValueError("at least one inference replica is needed")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self._replicas = tuple(dict.fromkeys(replicas))
        self._epsilon = epsilon
        # A replica batches this many requests at no extra cost: below it,
        # affinity wins over spreading (inference_max_batch).
        self._min_bound = max(1, min_bound)
        self._load = dict.fromkeys(self._replicas, 0)
        self._lock = threading.Lock()

    def rank(self, key: str) -> list[str]:
        """Every replica, the one `key` prefers first."""
        return sorted(self._replicas, key=lambda r: score(key, r), reverse=True)

    def acquire(self, key: str, exclude: frozenset[str] = frozenset()) -> str | None:
        """The replica for one request (counted in flight until `release`),
        skipping `exclude` (down, or already failed for this request); None
        when every replica is excluded. The load bound is the fair share of
        the replicas left to choose from."""
        ranking = [r for r in self.rank(key) if r not in exclude]
        if not ranking:
            return None
        with self._lock:
            total = sum(self._load.values()) + 1
            fair = math.ceil((1 + self._epsilon) * total / len(ranking))
            limit = max(self._min_bound, fair)
            # The bound is above the candidates' mean, so one is under it.
            replica = next(
                (r for r in ranking if self._load[r] + 1 <= limit), ranking[0]
            )
            self._load[replica] += 1
            return replica

    def release(self, replica: str) -> None:
        with self._lock:
            if self._load.get(replica, 0) > 0:
                self._load[replica] -= 1

    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return dict(self._load)
