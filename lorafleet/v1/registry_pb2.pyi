import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lorafleet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApiKey(_message.Message):
    __slots__ = ("id", "name", "roles", "created_by", "create_time", "expire_time", "revoke_time", "revoked_by")
    class RolesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    roles: _containers.ScalarMap[str, str]
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    revoked_by: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., roles: _Optional[_Mapping[str, str]] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked_by: _Optional[str] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("name", "roles", "ttl_seconds")
    class RolesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    roles: _containers.ScalarMap[str, str]
    ttl_seconds: float
    def __init__(self, name: _Optional[str] = ..., roles: _Optional[_Mapping[str, str]] = ..., ttl_seconds: _Optional[float] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("key", "secret")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    secret: str
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("include_revoked",)
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    def __init__(self, include_revoked: _Optional[bool] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class AuthenticateApiKeyRequest(_message.Message):
    __slots__ = ("id", "secret_sha256")
    ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_SHA256_FIELD_NUMBER: _ClassVar[int]
    id: str
    secret_sha256: str
    def __init__(self, id: _Optional[str] = ..., secret_sha256: _Optional[str] = ...) -> None: ...

class AuthenticateApiKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ApiKey
    def __init__(self, key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RecordAuditEventRequest(_message.Message):
    __slots__ = ("principal", "action", "target", "project", "after", "trace_id")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    principal: str
    action: str
    target: str
    project: str
    after: _struct_pb2.Struct
    trace_id: str
    def __init__(self, principal: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., project: _Optional[str] = ..., after: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., trace_id: _Optional[str] = ...) -> None: ...

class RecordAuditEventResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterArtifactRequest(_message.Message):
    __slots__ = ("kind", "name", "source_path", "expected_digest", "metadata", "metrics", "tags", "parents", "files", "version", "reuse_existing")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_DIGEST_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REUSE_EXISTING_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ArtifactKind
    name: str
    source_path: str
    expected_digest: str
    metadata: _struct_pb2.Struct
    metrics: _containers.ScalarMap[str, float]
    tags: _containers.ScalarMap[str, str]
    parents: _containers.RepeatedCompositeFieldContainer[_common_pb2.ParentRef]
    files: _containers.RepeatedCompositeFieldContainer[_common_pb2.FileEntry]
    version: int
    reuse_existing: bool
    def __init__(self, kind: _Optional[_Union[_common_pb2.ArtifactKind, str]] = ..., name: _Optional[str] = ..., source_path: _Optional[str] = ..., expected_digest: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., tags: _Optional[_Mapping[str, str]] = ..., parents: _Optional[_Iterable[_Union[_common_pb2.ParentRef, _Mapping]]] = ..., files: _Optional[_Iterable[_Union[_common_pb2.FileEntry, _Mapping]]] = ..., version: _Optional[int] = ..., reuse_existing: _Optional[bool] = ...) -> None: ...

class RegisterArtifactResponse(_message.Message):
    __slots__ = ("artifact", "existed")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    existed: bool
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., existed: _Optional[bool] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("id", "verify")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    id: str
    verify: bool
    def __init__(self, id: _Optional[str] = ..., verify: _Optional[bool] = ...) -> None: ...

class GetArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("kind", "name", "tags", "page_size", "page_token", "filter", "order_by")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    kind: _common_pb2.ArtifactKind
    name: str
    tags: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    filter: str
    order_by: str
    def __init__(self, kind: _Optional[_Union[_common_pb2.ArtifactKind, str]] = ..., name: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "next_page_token")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Artifact]
    next_page_token: str
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_common_pb2.Artifact, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetLineageResponse(_message.Message):
    __slots__ = ("artifacts", "edges", "training_runs")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_RUNS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Artifact]
    edges: _containers.RepeatedCompositeFieldContainer[_common_pb2.LineageEdge]
    training_runs: _containers.RepeatedCompositeFieldContainer[_common_pb2.TrainingRun]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_common_pb2.Artifact, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[_common_pb2.LineageEdge, _Mapping]]] = ..., training_runs: _Optional[_Iterable[_Union[_common_pb2.TrainingRun, _Mapping]]] = ...) -> None: ...

class RecordValidationReportRequest(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: _common_pb2.ValidationReport
    def __init__(self, report: _Optional[_Union[_common_pb2.ValidationReport, _Mapping]] = ...) -> None: ...

class RecordValidationReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: _common_pb2.ValidationReport
    def __init__(self, report: _Optional[_Union[_common_pb2.ValidationReport, _Mapping]] = ...) -> None: ...

class GetValidationReportRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetValidationReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: _common_pb2.ValidationReport
    def __init__(self, report: _Optional[_Union[_common_pb2.ValidationReport, _Mapping]] = ...) -> None: ...

class ListValidationReportsRequest(_message.Message):
    __slots__ = ("candidate_id", "page_size", "page_token")
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    page_size: int
    page_token: str
    def __init__(self, candidate_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListValidationReportsResponse(_message.Message):
    __slots__ = ("reports", "next_page_token")
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[_common_pb2.ValidationReport]
    next_page_token: str
    def __init__(self, reports: _Optional[_Iterable[_Union[_common_pb2.ValidationReport, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("artifact_id", "alias", "expected_artifact_id", "reason", "allow_archived")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ALLOW_ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    alias: str
    expected_artifact_id: str
    reason: str
    allow_archived: bool
    def __init__(self, artifact_id: _Optional[str] = ..., alias: _Optional[str] = ..., expected_artifact_id: _Optional[str] = ..., reason: _Optional[str] = ..., allow_archived: _Optional[bool] = ...) -> None: ...

class SetAliasResponse(_message.Message):
    __slots__ = ("artifact", "previous_artifact_id")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    previous_artifact_id: str
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., previous_artifact_id: _Optional[str] = ...) -> None: ...

class ResolveAliasRequest(_message.Message):
    __slots__ = ("name", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class ResolveAliasResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ...) -> None: ...

class PutDeploymentRequest(_message.Message):
    __slots__ = ("name", "model_id", "adapter_id", "strategy", "expected_revision", "reason", "targets", "output_format", "blocked_phrases")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_ID_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_PHRASES_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_id: str
    adapter_id: str
    strategy: _common_pb2.DeploymentStrategy
    expected_revision: int
    reason: str
    targets: _containers.RepeatedCompositeFieldContainer[_common_pb2.DeploymentTarget]
    output_format: str
    blocked_phrases: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., model_id: _Optional[str] = ..., adapter_id: _Optional[str] = ..., strategy: _Optional[_Union[_common_pb2.DeploymentStrategy, str]] = ..., expected_revision: _Optional[int] = ..., reason: _Optional[str] = ..., targets: _Optional[_Iterable[_Union[_common_pb2.DeploymentTarget, _Mapping]]] = ..., output_format: _Optional[str] = ..., blocked_phrases: _Optional[_Iterable[str]] = ...) -> None: ...

class PutDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: _common_pb2.Deployment
    def __init__(self, deployment: _Optional[_Union[_common_pb2.Deployment, _Mapping]] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: _common_pb2.Deployment
    def __init__(self, deployment: _Optional[_Union[_common_pb2.Deployment, _Mapping]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[_common_pb2.Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[_common_pb2.Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RollbackAliasRequest(_message.Message):
    __slots__ = ("name", "alias", "to_artifact_id", "expected_artifact_id", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TO_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    to_artifact_id: str
    expected_artifact_id: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., to_artifact_id: _Optional[str] = ..., expected_artifact_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackAliasResponse(_message.Message):
    __slots__ = ("artifact", "previous_artifact_id")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    previous_artifact_id: str
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., previous_artifact_id: _Optional[str] = ...) -> None: ...

class AliasEvent(_message.Message):
    __slots__ = ("name", "alias", "from_artifact_id", "to_artifact_id", "actor", "reason", "time", "trace_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    FROM_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    TO_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    from_artifact_id: str
    to_artifact_id: str
    actor: str
    reason: str
    time: _timestamp_pb2.Timestamp
    trace_id: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., from_artifact_id: _Optional[str] = ..., to_artifact_id: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ListAliasHistoryRequest(_message.Message):
    __slots__ = ("name", "alias", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAliasHistoryResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AliasEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AliasEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ArchiveArtifactRequest(_message.Message):
    __slots__ = ("id", "archived", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    archived: bool
    reason: str
    def __init__(self, id: _Optional[str] = ..., archived: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ArchiveArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ...) -> None: ...

class UploadBlobRequest(_message.Message):
    __slots__ = ("sha256", "size_bytes", "offset", "data")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    offset: int
    data: bytes
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadBlobResponse(_message.Message):
    __slots__ = ("sha256", "size_bytes", "existed")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    existed: bool
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., existed: _Optional[bool] = ...) -> None: ...

class GetUploadStatusRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class GetUploadStatusResponse(_message.Message):
    __slots__ = ("committed_offset", "complete")
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    committed_offset: int
    complete: bool
    def __init__(self, committed_offset: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class DownloadBlobRequest(_message.Message):
    __slots__ = ("sha256", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class DownloadBlobResponse(_message.Message):
    __slots__ = ("offset", "data", "size_bytes")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    size_bytes: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class GetModelCardRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetModelCardResponse(_message.Message):
    __slots__ = ("markdown", "card")
    MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    CARD_FIELD_NUMBER: _ClassVar[int]
    markdown: str
    card: _struct_pb2.Struct
    def __init__(self, markdown: _Optional[str] = ..., card: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "principal", "action", "target", "before", "after", "trace_id", "time", "project")
    ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    id: int
    principal: str
    action: str
    target: str
    before: _struct_pb2.Struct
    after: _struct_pb2.Struct
    trace_id: str
    time: _timestamp_pb2.Timestamp
    project: str
    def __init__(self, id: _Optional[int] = ..., principal: _Optional[str] = ..., action: _Optional[str] = ..., target: _Optional[str] = ..., before: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., after: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., trace_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., project: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("target", "start_time", "end_time", "action", "page_size", "page_token")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    target: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    action: str
    page_size: int
    page_token: str
    def __init__(self, target: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., action: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ApplyRetentionRequest(_message.Message):
    __slots__ = ("name", "keep_last", "dry_run")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    name: str
    keep_last: int
    dry_run: bool
    def __init__(self, name: _Optional[str] = ..., keep_last: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class ApplyRetentionResponse(_message.Message):
    __slots__ = ("deleted_artifact_ids", "kept_artifact_ids")
    DELETED_ARTIFACT_IDS_FIELD_NUMBER: _ClassVar[int]
    KEPT_ARTIFACT_IDS_FIELD_NUMBER: _ClassVar[int]
    deleted_artifact_ids: _containers.RepeatedScalarFieldContainer[str]
    kept_artifact_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_artifact_ids: _Optional[_Iterable[str]] = ..., kept_artifact_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ("min_age_seconds", "dry_run")
    MIN_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    min_age_seconds: int
    dry_run: bool
    def __init__(self, min_age_seconds: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class CollectGarbageResponse(_message.Message):
    __slots__ = ("deleted_blobs", "deleted_bytes", "deleted_version_dirs")
    DELETED_BLOBS_FIELD_NUMBER: _ClassVar[int]
    DELETED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DELETED_VERSION_DIRS_FIELD_NUMBER: _ClassVar[int]
    deleted_blobs: int
    deleted_bytes: int
    deleted_version_dirs: int
    def __init__(self, deleted_blobs: _Optional[int] = ..., deleted_bytes: _Optional[int] = ..., deleted_version_dirs: _Optional[int] = ...) -> None: ...

class GetTrainingRunRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetTrainingRunResponse(_message.Message):
    __slots__ = ("training_run",)
    TRAINING_RUN_FIELD_NUMBER: _ClassVar[int]
    training_run: _common_pb2.TrainingRun
    def __init__(self, training_run: _Optional[_Union[_common_pb2.TrainingRun, _Mapping]] = ...) -> None: ...

class ListTrainingRunsRequest(_message.Message):
    __slots__ = ("base_model_id", "dataset_id", "page_size", "page_token")
    BASE_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    base_model_id: str
    dataset_id: str
    page_size: int
    page_token: str
    def __init__(self, base_model_id: _Optional[str] = ..., dataset_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTrainingRunsResponse(_message.Message):
    __slots__ = ("training_runs", "next_page_token")
    TRAINING_RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    training_runs: _containers.RepeatedCompositeFieldContainer[_common_pb2.TrainingRun]
    next_page_token: str
    def __init__(self, training_runs: _Optional[_Iterable[_Union[_common_pb2.TrainingRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AppendDatasetRequest(_message.Message):
    __slots__ = ("dataset_id", "source_path", "blob_sha256", "rows", "version", "tags", "deduplicate")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    BLOB_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATE_FIELD_NUMBER: _ClassVar[int]
    dataset_id: str
    source_path: str
    blob_sha256: str
    rows: bytes
    version: int
    tags: _containers.ScalarMap[str, str]
    deduplicate: bool
    def __init__(self, dataset_id: _Optional[str] = ..., source_path: _Optional[str] = ..., blob_sha256: _Optional[str] = ..., rows: _Optional[bytes] = ..., version: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ..., deduplicate: _Optional[bool] = ...) -> None: ...

class AppendDatasetResponse(_message.Message):
    __slots__ = ("artifact", "existed", "previous_row_count", "appended_rows", "dropped_duplicates", "row_count")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    APPENDED_ROWS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    existed: bool
    previous_row_count: int
    appended_rows: int
    dropped_duplicates: int
    row_count: int
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ..., existed: _Optional[bool] = ..., previous_row_count: _Optional[int] = ..., appended_rows: _Optional[int] = ..., dropped_duplicates: _Optional[int] = ..., row_count: _Optional[int] = ...) -> None: ...

class UpdateArtifactRequest(_message.Message):
    __slots__ = ("id", "tags", "description", "update_mask")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    id: str
    tags: _containers.ScalarMap[str, str]
    description: str
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, id: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _common_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_common_pb2.Artifact, _Mapping]] = ...) -> None: ...
