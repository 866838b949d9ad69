"""Per-arm request metrics: counted in memory, written to the gateway database.

Every routed (or mirrored) request adds to its arm's totals for the current
time window: count, errors by status code, a latency histogram, tokens and
the online quality checks. A background flush writes this replica's windows
every `flush_s` (replacing its own rows, so replicas never contend); readers
sum every replica's rows of the windows they ask for. A killed gateway loses
at most the last `flush_s` of counts.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common import instruments
from services.common.database import Transactions, as_utc
from services.gateway.quality import Quality
from services.gateway.state.tables import ArmMetricsRow

log = logging.getLogger(__name__)

# Upper edges of the latency buckets in ms; the last one catches the rest.
LATENCY_EDGES_MS = (
    5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750,
    1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 20_000, 60_000, float("inf"),
)  # fmt: skip


@dataclass
class ArmTotals:
    """What one arm did over some windows (summed over replicas)."""

    shadow: bool = False
    requests: int = 0
    errors: Counter = field(default_factory=Counter)
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_EDGES_MS))
    completion_tokens: int = 0
    empty_outputs: int = 0
    invalid_json: int = 0
    blocked_outputs: int = 0
    output_chars: int = 0
    agreements: int = 0
    shadow_dropped: int = 0

    def add(self, other: ArmTotals) -> None:
        self.shadow = self.shadow or other.shadow
        self.errors.update(other.errors)
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def minus(self, earlier: ArmTotals) -> ArmTotals:
        """What was added since `earlier` (a snapshot of the same windows)."""
        out = ArmTotals(shadow=self.shadow)
        out.errors = Counter(
            {k: v - earlier.errors.get(k, 0) for k, v in self.errors.items()}
        )
        out.errors = +out.errors  # drops zero and negative counts
        out.buckets = [
            max(0, a - b) for a, b in zip(self.buckets, earlier.buckets, strict=True)
        ]
        for name in _COUNTS:
            value = getattr(self, name) - getattr(earlier, name)
            setattr(out, name, max(0, value))
        return out

    def to_dict(self) -> dict:
        """JSON-able, for a rollout's recorded baselines."""
        out = {name: getattr(self, name) for name in _COUNTS}
        out.update(shadow=self.shadow, errors=dict(self.errors), buckets=self.buckets)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ArmTotals:
        totals = cls(shadow=bool(data.get("shadow", False)))
        totals.errors = Counter({k: int(v) for k, v in data.get("errors", {}).items()})
        buckets = [int(b) for b in data.get("buckets", [])]
        totals.buckets = (buckets + [0] * len(LATENCY_EDGES_MS))[
            : len(LATENCY_EDGES_MS)
        ]
        for name in _COUNTS:
            setattr(totals, name, int(data.get(name, 0)))
        return totals

    @property
    def successes(self) -> int:
        return sum(self.buckets)

    def percentile_ms(self, q: float) -> float:
        """The latency under which a share `q` of successful requests finished,
        interpolated within its histogram bucket (0 with no successes)."""
        total = self.successes
        if not total:
            return 0.0
        rank, seen, low = q * total, 0, 0.0
        for edge, count in zip(LATENCY_EDGES_MS, self.buckets, strict=True):
            if count and seen + count >= rank:
                high = edge if edge != float("inf") else low * 2 or 60_000.0
                return low + (high - low) * (rank - seen) / count
            seen += count
            low = edge if edge != float("inf") else low
        return low


_COUNTS = (
    "requests",
    "completion_tokens",
    "empty_outputs",
    "invalid_json",
    "blocked_outputs",
    "output_chars",
    "agreements",
    "shadow_dropped",
)


class MetricsRecorder:
    """Counts requests per (deployment, arm, window) and flushes them."""

    def __init__(
        self,
        db: Transactions,
        replica: str,
        *,
        window_s: int = 10,
        flush_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        start: bool = True,
    ) -> None:
        self._db = db
        self._replica = replica[:256]
        self._window_s = window_s
        self._flush_s = flush_s
        self._clock = clock
        self._lock = threading.Lock()
        # (deployment, arm, window start epoch) -> totals of this replica.
        self._open: dict[tuple[str, str, int], ArmTotals] = {}
        self._dirty: set[tuple[str, str, int]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(
                target=self._run, name="gateway-metrics", daemon=True
            )
            self._thread.start()

    # --- recording (on the request path: memory only) -----------------------------
    def record(
        self,
        deployment: str,
        arm: str,
        *,
        latency_ms: float | None = None,
        error_code: str = "",
        tokens: int = 0,
        quality: Quality | None = None,
        shadow: bool = False,
        agreed: bool | None = None,
    ) -> None:
        _export(deployment, arm, latency_ms, error_code, shadow)
        with self._lock:
            totals = self._totals(deployment, arm, shadow)
            totals.requests += 1
            if error_code:
                totals.errors[error_code] += 1
            elif latency_ms is not None:
                index = bisect.bisect_left(LATENCY_EDGES_MS, latency_ms)
                totals.buckets[min(index, len(LATENCY_EDGES_MS) - 1)] += 1
            totals.completion_tokens += tokens
            if quality is not None:
                totals.empty_outputs += quality.empty
                totals.invalid_json += quality.invalid_json
                totals.blocked_outputs += quality.blocked
                totals.output_chars += quality.chars
            if agreed:
                totals.agreements += 1

    def record_dropped(self, deployment: str, arm: str) -> None:
        with self._lock:
            self._totals(deployment, arm, True).shadow_dropped += 1

    def _totals(self, deployment: str, arm: str, shadow: bool) -> ArmTotals:
        start = int(self._clock() // self._window_s * self._window_s)
        key = (deployment, arm, start)
        totals = self._open.get(key)
        if totals is None:
            totals = self._open[key] = ArmTotals(shadow=shadow)
        self._dirty.add(key)
        return totals

    # --- flushing and reading -------------------------------------------------------
    def flush(self) -> None:
        """Writes this replica's changed windows; forgets the closed ones."""
        with self._lock:
            dirty = {key: _copy(self._open[key]) for key in self._dirty}
            self._dirty.clear()
            current = int(self._clock() // self._window_s * self._window_s)
            for key in [k for k in self._open if k[2] < current and k not in dirty]:
                del self._open[key]  # written in an earlier flush, now closed
        if not dirty:
            return
        try:
            self._db.write(lambda s: self._upsert(s, dirty))
        except Exception:  # noqa: BLE001 - metrics must never fail requests
            log.exception("writing deployment metrics failed; retrying next flush")
            with self._lock:
                self._dirty.update(dirty)

    def _upsert(self, session: Session, dirty: dict) -> None:
        for (deployment, arm, start), totals in dirty.items():
            window = dt.datetime.fromtimestamp(start, dt.timezone.utc)
            key = (deployment, arm, window, self._replica)
            row = session.get(ArmMetricsRow, key)
            if row is None:
                row = ArmMetricsRow(
                    deployment=deployment,
                    arm=arm,
                    window_start=window,
                    replica=self._replica,
                )
                session.add(row)
            row.shadow = totals.shadow
            row.errors = dict(totals.errors)
            row.latency_buckets = list(totals.buckets)
            for name in _COUNTS:
                setattr(row, name, getattr(totals, name))

    def totals(self, deployment: str, window_s: int) -> dict[str, ArmTotals]:
        """Per-arm totals over the last `window_s` seconds, every replica's."""
        return self.totals_since(deployment, self._clock() - window_s)

    def window_start(self, epoch: float) -> float:
        """The start of the time window holding `epoch`."""
        return float(int(epoch) // self._window_s * self._window_s)

    def now(self) -> float:
        return self._clock()

    def totals_since(self, deployment: str, epoch: float) -> dict[str, ArmTotals]:
        """Per-arm totals of the windows from the one holding `epoch` on.

        Windows are whole: a caller that needs "since exactly then" subtracts
        a snapshot taken then (`ArmTotals.minus`), as rollouts do.
        """
        self.flush()
        since = dt.datetime.fromtimestamp(self.window_start(epoch), dt.timezone.utc)

        def work(session: Session) -> list[Any]:
            return list(
                session.scalars(
                    select(ArmMetricsRow).where(
                        ArmMetricsRow.deployment == deployment,
                        ArmMetricsRow.window_start >= since,
                    )
                )
            )

        result: dict[str, ArmTotals] = {}
        for row in self._db.read(work):
            if as_utc(row.window_start) < since:
                continue
            result.setdefault(row.arm, ArmTotals()).add(_from_row(row))
        return result

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_s):
            self.flush()


def _copy(totals: ArmTotals) -> ArmTotals:
    copy = ArmTotals(shadow=totals.shadow)
    copy.add(totals)
    return copy


def _from_row(row: ArmMetricsRow) -> ArmTotals:
    totals = ArmTotals(shadow=row.shadow)
    totals.errors = Counter({k: int(v) for k, v in (row.errors or {}).items()})
    buckets = list(row.latency_buckets or [])
    totals.buckets = (buckets + [0] * len(LATENCY_EDGES_MS))[: len(LATENCY_EDGES_MS)]
    for name in _COUNTS:
        setattr(totals, name, int(getattr(row, name) or 0))
    return totals


def _export(
    deployment: str, arm: str, latency_ms: float | None, error_code: str, shadow: bool
) -> None:
    """The same request as OpenTelemetry series per deployment and arm (the
    per-arm panels of a rollout dashboard)."""
    where = {
        "lorafleet.deployment": deployment,
        "lorafleet.arm": arm,
        "lorafleet.shadow": shadow,
    }
    status = error_code or "OK"
    instruments.add(
        instruments.deployment_requests,
        1,
        {**where, "rpc.response.status_code": status},
    )
    if not error_code and latency_ms is not None:
        instruments.record(
            instruments.deployment_request_duration, latency_ms / 1000.0, where
        )
