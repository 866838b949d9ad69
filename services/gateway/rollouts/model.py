"""A rollout's record: what it rolls out where, and how it ended."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from services.common.jobqueue import Codec
from services.gateway.rollouts.settings import RolloutSettings

# How a rollout looks while its job runs (kept in the job's details)...
PROGRESSING, PAUSED, AWAITING_DECISION = "PROGRESSING", "PAUSED", "AWAITING_DECISION"
# ... and how it ended (its job's result).
PROMOTED, ROLLED_BACK = "PROMOTED", "ROLLED_BACK"


@dataclass(frozen=True)
class Version:
    """A servable version: a model, maybe with an adapter, resolved to ids."""

    model_id: str
    adapter_id: str = ""
    digest: str = ""  # the serving artifact's (adapter's, else model's)
    label: str = ""  # "name:version" of the serving artifact, for messages
    artifact_name: str = ""  # its name (the alias is moved on it)

    @property
    def artifact_id(self) -> str:
        return self.adapter_id or self.model_id

    def same_as(self, model_id: str, adapter_id: str) -> bool:
        return (self.model_id, self.adapter_id) == (model_id, adapter_id)


@dataclass(frozen=True)
class RolloutSpec:
    deployment: str
    settings: RolloutSettings  # defaults filled in
    stable: Version
    candidate: Version
    force: bool = False
    reason: str = ""
    report_id: str = ""  # the candidate's latest validation report, if any
    # Where the alias pointed on the candidate's name when the rollout started
    # ("" when it did not exist): promotion moves it by compare-and-set.
    alias_before: str = ""
    # The project of the deployment: the rollout belongs to it.
    project: str = "default"

    @property
    def strategy(self) -> str:
        return self.settings.strategy


@dataclass(frozen=True)
class RolloutOutcome:
    state: str  # PROMOTED or ROLLED_BACK
    reason: str


def _encode_spec(spec: RolloutSpec) -> dict[str, Any]:
    data = dataclasses.asdict(spec)
    data["settings"] = spec.settings.to_dict()
    return data


def _decode_spec(data: dict[str, Any]) -> RolloutSpec:
    return RolloutSpec(
        deployment=data["deployment"],
        settings=RolloutSettings.from_dict(data["settings"]),
        stable=Version(**data["stable"]),
        candidate=Version(**data["candidate"]),
        force=bool(data.get("force", False)),
        reason=data.get("reason", ""),
        report_id=data.get("report_id", ""),
        project=data.get("project", "default"),
        alias_before=data.get("alias_before", ""),
    )


ROLLOUT_CODEC = Codec(
    encode_spec=_encode_spec,
    decode_spec=_decode_spec,
    encode_result=lambda r: dataclasses.asdict(r) if r is not None else {},
    decode_result=lambda d: RolloutOutcome(**d) if d else None,
)
