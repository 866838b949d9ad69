"""Protobuf <-> registry domain conversions (the servicer's edge)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import json_format

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.auth.keys import ApiKeyInfo
from services.common.convert import struct, timestamp
from services.common.errors import InvalidArgument
from services.registry.domain import (
    AliasEvent,
    Artifact,
    ArtifactKind,
    AuditEvent,
    Deployment,
    Edge,
    ValidationReport,
)
from services.registry.targets import Target
from services.registry.training_runs import TrainingRun

KIND_PREFIX = "ARTIFACT_KIND_"


def kind_from_pb(value: int) -> ArtifactKind | None:
    if value == common_pb2.ARTIFACT_KIND_UNSPECIFIED:
        return None
    try:
        name = common_pb2.ArtifactKind.Name(value)
        return ArtifactKind(name.removeprefix(KIND_PREFIX))
    except ValueError as exc:
        raise InvalidArgument(
            f"kind {value} is not a known ArtifactKind", field="kind"
        ) from exc


def kind_to_pb(kind: ArtifactKind) -> int:
    return common_pb2.ArtifactKind.Value(KIND_PREFIX + kind.value)


def artifact_to_pb(a: Artifact) -> common_pb2.Artifact:
    return common_pb2.Artifact(
        id=a.id,
        kind=kind_to_pb(a.kind),
        name=a.name,
        version=a.version,
        digest=a.digest,
        local_path=a.local_path,
        size_bytes=a.size_bytes,
        files=[
            common_pb2.FileEntry(path=f.path, sha256=f.sha256, size_bytes=f.size_bytes)
            for f in a.files
        ],
        metadata=struct(a.metadata),
        metrics=a.metrics,
        tags=a.tags,
        create_time=timestamp(a.create_time.timestamp()),
        aliases=a.aliases,
        archived=a.archived,
        project=a.project,
        description=a.description,
    )


def edge_to_pb(e: Edge) -> common_pb2.LineageEdge:
    return common_pb2.LineageEdge(
        parent_id=e.parent_id, child_id=e.child_id, relation=e.relation
    )


def report_to_pb(r: ValidationReport) -> common_pb2.ValidationReport:
    pb = json_format.ParseDict(
        r.body, common_pb2.ValidationReport(), ignore_unknown_fields=True
    )
    pb.id, pb.candidate_id = r.id, r.candidate_id
    pb.baseline_id, pb.dataset_id = r.baseline_id, r.dataset_id
    pb.passed, pb.score = r.passed, r.score
    pb.create_time.CopyFrom(timestamp(r.create_time.timestamp()))
    return pb


_ROLE_PREFIX = "TARGET_ROLE_"


def target_to_pb(t: Target) -> common_pb2.DeploymentTarget:
    return common_pb2.DeploymentTarget(
        model_id=t.model_id,
        adapter_id=t.adapter_id,
        digest=t.digest,
        weight_bps=t.weight_bps,
        arm=t.arm,
        role=common_pb2.TargetRole.Value(_ROLE_PREFIX + t.role.upper()),
        mirror_bps=t.mirror_bps,
    )


def target_from_pb(pb: common_pb2.DeploymentTarget) -> Target:
    """Unknown or unset roles become a name check_targets refuses."""
    try:
        role = common_pb2.TargetRole.Name(pb.role)[len(_ROLE_PREFIX) :].lower()
    except ValueError:
        role = f"#{pb.role}"
    return Target(
        model_id=pb.model_id,
        adapter_id=pb.adapter_id,
        weight_bps=pb.weight_bps,
        arm=pb.arm,
        role=role,
        mirror_bps=pb.mirror_bps,
    )


def deployment_to_pb(d: Deployment) -> common_pb2.Deployment:
    return common_pb2.Deployment(
        name=d.name,
        model_id=d.model_id,
        adapter_id=d.adapter_id,
        strategy=d.strategy,
        revision=d.revision,
        previous_model_id=d.previous_model_id,
        update_time=timestamp(d.update_time.timestamp()),
        updated_by=d.updated_by,
        reason=d.reason,
        targets=[target_to_pb(t) for t in d.targets],
        output_format=d.output_format,
        blocked_phrases=d.blocked_phrases,
        project=d.project,
    )


def alias_event_to_pb(e: AliasEvent) -> registry_pb2.AliasEvent:
    return registry_pb2.AliasEvent(
        name=e.name,
        alias=e.alias,
        from_artifact_id=e.from_id,
        to_artifact_id=e.to_id,
        actor=e.actor,
        reason=e.reason,
        time=timestamp(e.time.timestamp()),
        trace_id=e.trace_id,
    )


def audit_event_to_pb(e: AuditEvent) -> registry_pb2.AuditEvent:
    pb = registry_pb2.AuditEvent(
        id=e.id,
        principal=e.principal,
        action=e.action,
        target=e.target,
        trace_id=e.trace_id,
        time=timestamp(e.time.timestamp()),
        project=e.project,
    )
    if e.before is not None:
        pb.before.CopyFrom(struct(e.before))
    if e.after is not None:
        pb.after.CopyFrom(struct(e.after))
    return pb


def time_or_none(ts) -> dt.datetime | None:
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=dt.timezone.utc)


def training_run_to_pb(r: TrainingRun) -> common_pb2.TrainingRun:
    return common_pb2.TrainingRun(
        id=r.id,
        adapter_id=r.adapter_id,
        base_model_id=r.base_model_id,
        base_model_digest=r.base_model_digest,
        dataset_id=r.dataset_id,
        dataset_digest=r.dataset_digest,
        config=struct(r.config),
        seed=r.seed,
        metrics={k: float(v) for k, v in r.metrics.items()},
        environment=struct(r.environment),
        split=struct(r.split),
        train_job_id=r.train_job_id,
        create_time=timestamp(r.create_time.timestamp()),
    )


def api_key_to_pb(k: ApiKeyInfo) -> registry_pb2.ApiKey:
    pb = registry_pb2.ApiKey(
        id=k.key_id,
        name=k.name,
        roles=k.roles,
        created_by=k.created_by,
        create_time=timestamp(k.create_time),
        revoked_by=k.revoked_by,
    )
    if k.expire_time is not None:
        pb.expire_time.CopyFrom(timestamp(k.expire_time))
    if k.revoke_time is not None:
        pb.revoke_time.CopyFrom(timestamp(k.revoke_time))
    return pb
