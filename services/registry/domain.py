"""Registry domain objects and the naming rules every entry point enforces."""

from __future__ import annotations

import datetime as dt
import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument, shorten
from services.registry.manifests import FileEntry

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
RELATION_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# artifacts.version is a 32-bit INTEGER column on PostgreSQL (64-bit on SQLite):
# a larger number cannot even be compared with it there.
MAX_VERSION = 2**31 - 1


class ArtifactKind(str, enum.Enum):
    """Mirrors lorafleet.v1.ArtifactKind without the prefix; stored by name."""

    BASE_MODEL = "BASE_MODEL"
    DATASET = "DATASET"
    ADAPTER = "ADAPTER"
    MERGED_MODEL = "MERGED_MODEL"


# Kinds a deployment can serve as its `model_id`.
MODEL_KINDS = frozenset({ArtifactKind.BASE_MODEL, ArtifactKind.MERGED_MODEL})


def check_name(name: str, *, field: str = "name", what: str = "name") -> str:
    if not name:
        raise InvalidArgument(f"{field} is required", field=field)
    if not NAME_RE.match(name):
        raise InvalidArgument(
            f"{field} {shorten(name)!r} is not a valid {what}: use 1-128 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit",
            field=field,
        )
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias or ""):
        raise InvalidArgument(
            f"alias {shorten(alias)!r} is not a lower-case identifier: use 1-63 of "
            "a-z, 0-9, '_' or '-', starting with a letter (e.g. 'production')",
            field="alias",
        )
    return alias


def check_relation(relation: str) -> str:
    if not RELATION_RE.match(relation):
        raise InvalidArgument(
            f"parents[].relation {shorten(relation)!r} is not a lower-case "
            "identifier such as 'base_model', 'dataset' or 'adapter'",
            field="parents",
        )
    return relation


def check_version(version: int) -> int:
    """An explicit version to create: 1..MAX_VERSION, or 0 for the next one."""
    if not 0 <= version <= MAX_VERSION:
        raise InvalidArgument(
            f"version must be between 1 and {MAX_VERSION} (or 0 for the next), "
            f"got {version}",
            field="version",
        )
    return version


def version_number(text: str) -> int | None:
    """The version a "name:<version>" suffix names, None if it names none.

    Only plain digits up to MAX_VERSION count; the length check comes first
    because int() refuses strings over 4300 digits with a ValueError.
    """
    if not text.isdigit() or len(text) > len(str(MAX_VERSION)):
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None


def check_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics are stored as JSON, which has no NaN or infinity."""
    for key, value in metrics.items():
        if not math.isfinite(value):
            raise InvalidArgument(
                f"metrics[{shorten(key)!r}] is {value}; metrics must be finite numbers",
                field="metrics",
            )
    return {k: float(v) for k, v in metrics.items()}


@dataclass
class Artifact:
    id: str
    kind: ArtifactKind
    name: str
    version: int
    digest: str
    local_path: str
    files: list[FileEntry]
    size_bytes: int
    metadata: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    create_time: dt.datetime
    aliases: list[str] = field(default_factory=list)
    archived: bool = False
    project: str = "default"
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class ParentRef:
    # An id or any reference GetArtifact accepts ("name:3", "name@prod").
    artifact_id: str
    # Empty: derived from the parent's kind ("base_model", "dataset", ...).
    relation: str = ""


@dataclass(frozen=True)
class Edge:
    parent_id: str
    child_id: str
    relation: str


@dataclass
class Registration:
    artifact: Artifact
    # True when the name already had a version with identical content.
    existed: bool


@dataclass
class Lineage:
    # The artifact asked about first, then ancestors and descendants.
    artifacts: list[Artifact]
    edges: list[Edge]
    # TrainingRun records of the adapters among `artifacts`.
    training_runs: list[Any] = field(default_factory=list)


@dataclass
class AliasMove:
    artifact: Artifact
    previous_artifact_id: str


@dataclass
class ValidationReport:
    id: str
    candidate_id: str
    baseline_id: str
    dataset_id: str
    passed: bool
    score: float
    # The whole report as a JSON object (scores, gates, samples, score_metric).
    body: dict[str, Any]
    create_time: dt.datetime


@dataclass
class Deployment:
    name: str
    model_id: str
    adapter_id: str
    # lorafleet.v1.DeploymentStrategy number, kept opaque by the registry.
    strategy: int
    revision: int
    previous_model_id: str
    update_time: dt.datetime
    updated_by: str
    reason: str
    # services.registry.targets.Target, stable first as written.
    targets: list[Any] = field(default_factory=list)
    output_format: str = ""
    blocked_phrases: list[str] = field(default_factory=list)
    project: str = "default"


@dataclass
class AliasEvent:
    name: str
    alias: str
    from_id: str
    to_id: str
    actor: str
    reason: str
    time: dt.datetime
    trace_id: str


@dataclass
class AuditEvent:
    id: int
    principal: str
    action: str
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    trace_id: str
    time: dt.datetime
    project: str = "default"


@dataclass
class Retention:
    deleted: list[str]
    kept: list[str]
