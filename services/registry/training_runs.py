"""Training runs: what produced each trained adapter, recorded at registration.

The trainer registers an adapter with its effective config, seed, split,
environment and the base/dataset it used in the adapter's metadata; the registry
turns that into a queryable TrainingRun row in the same transaction, so lineage
reads adapter <- training run <- base model, dataset.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.errors import NotFound, shorten
from services.registry.db import ArtifactRow, Database, TrainingRunRow, as_utc
from services.registry.queries import list_scope, new_id, page_query, resolve_ref

# The adapter metadata key the trainer always writes; its presence marks a
# trained (rather than imported) adapter.
TRAIN_CONFIG_KEY = "train_config"


@dataclass
class TrainingRun:
    id: str
    adapter_id: str
    base_model_id: str
    base_model_digest: str
    dataset_id: str
    dataset_digest: str
    config: dict[str, Any]
    seed: int
    metrics: dict[str, float]
    environment: dict[str, Any]
    split: dict[str, Any]
    train_job_id: str
    create_time: dt.datetime
    extra: dict[str, Any] = field(default_factory=dict)


def _to_domain(row: TrainingRunRow) -> TrainingRun:
    return TrainingRun(
        id=row.id,
        adapter_id=row.adapter_id,
        base_model_id=row.base_model_id or "",
        base_model_digest=row.base_model_digest,
        dataset_id=row.dataset_id or "",
        dataset_digest=row.dataset_digest,
        config=dict(row.config or {}),
        seed=row.seed,
        metrics=dict(row.metrics or {}),
        environment=dict(row.environment or {}),
        split=dict(row.split or {}),
        train_job_id=row.train_job_id,
        create_time=as_utc(row.create_time),
    )


def _existing_id(session: Session, artifact_id: Any) -> str | None:
    """The id if that artifact is registered here (lineage must not dangle)."""
    if not isinstance(artifact_id, str) or not artifact_id:
        return None
    return session.scalar(select(ArtifactRow.id).where(ArtifactRow.id == artifact_id))


def record_training_run(
    session: Session, adapter: ArtifactRow, metadata: dict[str, Any]
) -> TrainingRunRow | None:
    """Adds the run behind a newly registered trained adapter, if it is one."""
    config = metadata.get(TRAIN_CONFIG_KEY)
    if not isinstance(config, dict):
        return None
    split = metadata.get("split") if isinstance(metadata.get("split"), dict) else {}
    seed = metadata.get("seed", config.get("seed", 0))
    row = TrainingRunRow(
        id=new_id(),
        adapter_id=adapter.id,
        base_model_id=_existing_id(session, metadata.get("base_model_id")),
        base_model_digest=str(metadata.get("base_model_digest", "")),
        dataset_id=_existing_id(session, metadata.get("dataset_id")),
        dataset_digest=str(metadata.get("dataset_digest", "")),
        config=config,
        seed=int(seed) if isinstance(seed, (int, float)) else 0,
        metrics=dict(adapter.metrics or {}),
        environment=dict(metadata.get("environment") or {}),
        split=dict(split or {}),
        train_job_id=str(metadata.get("train_job_id", "")),
        create_time=adapter.create_time,
    )
    session.add(row)
    return row


def runs_for_adapters(session: Session, adapter_ids: list[str]) -> list[TrainingRun]:
    rows = session.scalars(
        select(TrainingRunRow)
        .where(TrainingRunRow.adapter_id.in_(adapter_ids))
        .order_by(TrainingRunRow.create_time, TrainingRunRow.id)
    )
    return [_to_domain(r) for r in rows]


class TrainingRuns:
    """Reads training runs; they are written only by adapter registration."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, ref: str) -> TrainingRun:
        """By run id, or by any reference to the adapter the run produced."""

        def work(session: Session) -> TrainingRun:
            row = session.get(TrainingRunRow, ref) if ref else None
            if row is None:
                adapter = resolve_ref(session, ref, field="id")
                row = session.scalar(
                    select(TrainingRunRow).where(
                        TrainingRunRow.adapter_id == adapter.id
                    )
                )
                if row is None:
                    raise NotFound(
                        f"{shorten(ref)!r} ({adapter.kind} {adapter.name}:"
                        f"{adapter.version}) has no training run: only adapters "
                        "trained by the trainer service record one",
                        field="id",
                    )
            return _to_domain(row)

        return self.db.read(work)

    def list(
        self,
        *,
        base_model_id: str = "",
        dataset_id: str = "",
        size: int = 0,
        token: str = "",
    ) -> tuple[list[TrainingRun], str]:
        """Newest first, optionally only runs on one base model and/or dataset."""

        def work(session: Session) -> tuple[list[TrainingRun], str]:
            query = select(TrainingRunRow).order_by(
                TrainingRunRow.create_time.desc(), TrainingRunRow.id
            )
            if base_model_id:
                base = resolve_ref(session, base_model_id, field="base_model_id")
                query = query.where(TrainingRunRow.base_model_id == base.id)
            if dataset_id:
                data = resolve_ref(session, dataset_id, field="dataset_id")
                query = query.where(TrainingRunRow.dataset_id == data.id)
            scope = list_scope("training_runs", base_model_id, dataset_id)
            rows, nxt = page_query(session, query, size, token, scope)
            return [_to_domain(r) for r in rows], nxt

        return self.db.read(work)
