"""The rollouts' shared state in the gateway database: which rollout holds a
deployment, and the operator's commands waiting for its controller.

Any replica answers PauseRollout or AbortRollout by writing here; the replica
whose controller runs the rollout reads it on its next tick (a local wake-up
makes that immediate when both are the same process).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.common.database import Transactions, as_utc, utcnow
from services.gateway.state.tables import RolloutRow

PROMOTE, ABORT, CONCLUDE = "promote", "abort", "conclude"
# A lock row whose job never appeared (the gateway died between writing the
# row and queueing the job) is stale after this long.
ORPHAN_LOCK_S = 60.0


@dataclass(frozen=True)
class Controls:
    """What the operator asked of a running rollout."""

    paused: bool
    command: str  # "", promote, abort or conclude
    reason: str
    generation: int
    active: bool


class RolloutControls:
    def __init__(self, db: Transactions) -> None:
        self._db = db
        self._wakers: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # --- holding a deployment ------------------------------------------------------
    def acquire(
        self,
        rollout_id: str,
        deployment: str,
        is_stale: Callable[[str, dt.datetime], bool],
    ) -> str:
        """Makes `rollout_id` the deployment's running rollout; returns "" or
        the id of the rollout that holds it. `is_stale(id, created)` says
        whether a holder has in fact ended (its job finished or never came)."""

        def work(session: Session) -> str:
            holder = session.scalar(
                select(RolloutRow)
                .where(RolloutRow.active_deployment == deployment)
                .with_for_update()
            )
            if holder is not None:
                if not is_stale(holder.id, as_utc(holder.create_time)):
                    return holder.id
                holder.active_deployment = None
                session.flush()
            session.add(
                RolloutRow(
                    id=rollout_id,
                    deployment=deployment,
                    active_deployment=deployment,
                    create_time=utcnow(),
                    paused=False,
                    command=None,
                    command_reason="",
                    generation=0,
                )
            )
            return ""

        return self._db.write(work)

    def holder(self, deployment: str) -> tuple[str, dt.datetime | None]:
        """The rollout holding `deployment` (and when it started), or ""."""

        def work(session: Session) -> tuple[str, dt.datetime | None]:
            row = session.scalar(
                select(RolloutRow).where(RolloutRow.active_deployment == deployment)
            )
            return (row.id, as_utc(row.create_time)) if row else ("", None)

        return self._db.read(work)

    def forget(self, rollout_id: str) -> None:
        """Removes a row whose job could not be queued (nothing was started)."""
        self._db.write(
            lambda s: s.query(RolloutRow).filter(RolloutRow.id == rollout_id).delete()
        )

    def release(self, rollout_id: str) -> None:
        """The rollout ended: its deployment is free for the next one."""
        self._db.write(
            lambda s: s.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id)
                .values(active_deployment=None, command=None)
            )
        )
        self._wake(rollout_id)

    # --- commands ------------------------------------------------------------------
    def command(self, rollout_id: str, command: str, reason: str) -> bool:
        """Leaves `command` for the controller; False if the rollout has ended."""
        return self._set(rollout_id, command=command, command_reason=reason[:1024])

    def pause(self, rollout_id: str, paused: bool, reason: str) -> bool:
        return self._set(rollout_id, paused=paused, command_reason=reason[:1024])

    def done(self, rollout_id: str) -> None:
        """The controller carried out the pending command."""
        self._db.write(
            lambda s: s.execute(
                update(RolloutRow)
                .where(RolloutRow.id == rollout_id)
                .values(command=None)
            )
        )

    def _set(self, rollout_id: str, **values: object) -> bool:
        def work(session: Session) -> bool:
            row = session.get(RolloutRow, rollout_id, with_for_update=True)
            if row is None or row.active_deployment is None:
                return False
            for name, value in values.items():
                setattr(row, name, value)
            row.generation += 1
            return True

        changed = self._db.write(work)
        if changed:
            self._wake(rollout_id)
        return changed

    def read(self, rollout_id: str) -> Controls:
        def work(session: Session) -> Controls:
            row = session.get(RolloutRow, rollout_id)
            if row is None:
                return Controls(False, "", "", 0, False)
            return Controls(
                bool(row.paused),
                row.command or "",
                row.command_reason or "",
                int(row.generation or 0),
                row.active_deployment is not None,
            )

        return self._db.read(work)

    def list_ids(self, deployment: str, offset: int, limit: int) -> list[str]:
        """Rollout ids, newest first (of one deployment when given)."""

        def work(session: Session) -> list[str]:
            query = select(RolloutRow.id)
            if deployment:
                query = query.where(RolloutRow.deployment == deployment)
            query = query.order_by(RolloutRow.create_time.desc(), RolloutRow.id.desc())
            return list(session.scalars(query.offset(offset).limit(limit)))

        return self._db.read(work)

    # --- waking a local controller -------------------------------------------------
    def waker(self, rollout_id: str) -> threading.Event:
        with self._lock:
            return self._wakers.setdefault(rollout_id, threading.Event())

    def drop_waker(self, rollout_id: str) -> None:
        with self._lock:
            self._wakers.pop(rollout_id, None)

    def _wake(self, rollout_id: str) -> None:
        with self._lock:
            event = self._wakers.get(rollout_id)
        if event is not None:
            event.set()
