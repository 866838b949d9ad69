"""gRPC face of the registry: converts protobuf to domain calls and back."""

from __future__ import annotations

import grpc
from google.protobuf import json_format

from lorafleet.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.common.auth.caller import current_caller
from services.common.auth.denials import Denial
from services.common.auth.permissions import ADMIN, ALL_PROJECTS
from services.common.config import Config
from services.common.convert import from_struct, non_finite, struct
from services.common.errors import InvalidArgument, shorten
from services.common.server import RunningServer, create_server
from services.common.telemetry import current_trace_id
from services.registry.api_keys import ApiKeys
from services.registry.appends import DatasetAppends
from services.registry.audit import AuditLog, record_denial
from services.registry.cards import build_card, render_markdown
from services.registry.convert import (
    alias_event_to_pb,
    api_key_to_pb,
    artifact_to_pb,
    audit_event_to_pb,
    deployment_to_pb,
    edge_to_pb,
    kind_from_pb,
    report_to_pb,
    target_from_pb,
    time_or_none,
    training_run_to_pb,
)
from services.registry.db import Database, audit, make_engine
from services.registry.deployments import Deployments
from services.registry.domain import (
    ParentRef,
)
from services.registry.maintenance import DEFAULT_GC_MIN_AGE_S, Maintenance
from services.registry.manifests import FileEntry, check_sha256
from services.registry.migrations import upgrade_database
from services.registry.reports import ValidationReports
from services.registry.repository import Registry
from services.registry.store import LocalStore
from services.registry.training_runs import TrainingRuns


def _actor(context: grpc.ServicerContext) -> str:
    """Who made a change, as audit records and `updated_by` name them: the
    authenticated caller (and the service relaying for them), never a name the
    client asserts in its metadata nor its network address."""
    return current_caller().display


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Stateless; every call opens its own session, so the thread pool is safe."""

    def __init__(
        self,
        registry: Registry,
        reports: ValidationReports,
        deployments: Deployments,
        audit_log: AuditLog | None = None,
        maintenance: Maintenance | None = None,
    ) -> None:
        self.registry = registry
        self.reports = reports
        self.deployments = deployments
        self.audit_log = audit_log or AuditLog(registry.db)
        self.maintenance = maintenance or Maintenance(registry.db, registry.store)
        self.training_runs = TrainingRuns(registry.db)
        self.appends = DatasetAppends(registry)
        self.api_keys = ApiKeys(registry.db)

    def RegisterArtifact(self, request, context):
        metadata = from_struct(request.metadata)
        bad = non_finite(metadata)
        if bad:
            raise InvalidArgument(
                f"metadata.{shorten(bad)} is not a finite number (JSON has no NaN "
                "or Infinity); record it as a string or leave it out",
                field=f"metadata.{shorten(bad)}",
            )
        reg = self.registry.register_artifact(
            kind=kind_from_pb(request.kind),
            name=request.name,
            source_path=request.source_path,
            expected_digest=request.expected_digest,
            metadata=metadata,
            metrics=dict(request.metrics),
            tags=dict(request.tags),
            parents=[ParentRef(p.artifact_id, p.relation) for p in request.parents],
            files=[FileEntry(f.path, f.sha256, f.size_bytes) for f in request.files],
            version=request.version,
            reuse_existing=request.reuse_existing,
            principal=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.RegisterArtifactResponse(
            artifact=artifact_to_pb(reg.artifact), existed=reg.existed
        )

    def UpdateArtifact(self, request, context):
        paths = set(request.update_mask.paths)
        unknown = sorted(paths - {"tags", "description"})
        if unknown:
            raise InvalidArgument(
                f"update_mask names {unknown[0]!r}; only tags and description can "
                "change (versions are immutable otherwise)",
                field="update_mask",
            )
        artifact = self.registry.update(
            request.id,
            tags=dict(request.tags) if "tags" in paths else None,
            description=request.description if "description" in paths else None,
            principal=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.UpdateArtifactResponse(artifact=artifact_to_pb(artifact))

    def AppendDataset(self, request, context):
        result = self.appends.append(
            request.dataset_id,
            source_path=request.source_path,
            blob_sha256=request.blob_sha256,
            rows=request.rows,
            version=request.version,
            tags=dict(request.tags),
            deduplicate=request.deduplicate,
            principal=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.AppendDatasetResponse(
            artifact=artifact_to_pb(result.artifact),
            existed=result.existed,
            previous_row_count=result.previous_row_count,
            appended_rows=result.appended_rows,
            dropped_duplicates=result.dropped_duplicates,
            row_count=result.row_count,
        )

    def GetArtifact(self, request, context):
        artifact = self.registry.get_artifact(request.id, verify=request.verify)
        return registry_pb2.GetArtifactResponse(artifact=artifact_to_pb(artifact))

    def ListArtifacts(self, request, context):
        artifacts, nxt = self.registry.list_artifacts(
            kind=kind_from_pb(request.kind),
            name=request.name,
            tags=dict(request.tags),
            size=request.page_size,
            token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
        )
        return registry_pb2.ListArtifactsResponse(
            artifacts=[artifact_to_pb(a) for a in artifacts], next_page_token=nxt
        )

    def GetLineage(self, request, context):
        lineage = self.registry.get_lineage(request.id)
        return registry_pb2.GetLineageResponse(
            artifacts=[artifact_to_pb(a) for a in lineage.artifacts],
            edges=[edge_to_pb(e) for e in lineage.edges],
            training_runs=[training_run_to_pb(r) for r in lineage.training_runs],
        )

    def GetTrainingRun(self, request, context):
        run = self.training_runs.get(request.id)
        return registry_pb2.GetTrainingRunResponse(training_run=training_run_to_pb(run))

    def ListTrainingRuns(self, request, context):
        runs, nxt = self.training_runs.list(
            base_model_id=request.base_model_id,
            dataset_id=request.dataset_id,
            size=request.page_size,
            token=request.page_token,
        )
        return registry_pb2.ListTrainingRunsResponse(
            training_runs=[training_run_to_pb(r) for r in runs], next_page_token=nxt
        )

    def RecordValidationReport(self, request, context):
        r = request.report
        report = self.reports.record(
            candidate_id=r.candidate_id,
            baseline_id=r.baseline_id,
            dataset_id=r.dataset_id,
            passed=r.passed,
            score=r.score,
            body=json_format.MessageToDict(r, preserving_proto_field_name=True),
            principal=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.RecordValidationReportResponse(report=report_to_pb(report))

    def GetValidationReport(self, request, context):
        report = self.reports.get(request.id)
        return registry_pb2.GetValidationReportResponse(report=report_to_pb(report))

    def ListValidationReports(self, request, context):
        reports, nxt = self.reports.list(
            candidate_id=request.candidate_id,
            size=request.page_size,
            token=request.page_token,
        )
        return registry_pb2.ListValidationReportsResponse(
            reports=[report_to_pb(r) for r in reports], next_page_token=nxt
        )

    def SetAlias(self, request, context):
        expected = (
            request.expected_artifact_id
            if request.HasField("expected_artifact_id")
            else None
        )
        move = self.registry.aliases.set(
            request.artifact_id,
            request.alias,
            expected_artifact_id=expected,
            reason=request.reason,
            trace_id=current_trace_id(),
            actor=_actor(context),
            allow_archived=request.allow_archived,
        )
        return registry_pb2.SetAliasResponse(
            artifact=artifact_to_pb(move.artifact),
            previous_artifact_id=move.previous_artifact_id,
        )

    def ResolveAlias(self, request, context):
        artifact = self.registry.aliases.resolve(request.name, request.alias)
        return registry_pb2.ResolveAliasResponse(artifact=artifact_to_pb(artifact))

    def PutDeployment(self, request, context):
        expected = (
            request.expected_revision if request.HasField("expected_revision") else None
        )
        deployment = self.deployments.put(
            name=request.name,
            model_id=request.model_id,
            adapter_id=request.adapter_id,
            targets=[target_from_pb(t) for t in request.targets],
            output_format=request.output_format,
            blocked_phrases=list(request.blocked_phrases),
            strategy=request.strategy or common_pb2.DEPLOYMENT_STRATEGY_REPLACE,
            expected_revision=expected,
            reason=request.reason,
            updated_by=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.PutDeploymentResponse(
            deployment=deployment_to_pb(deployment)
        )

    def GetDeployment(self, request, context):
        deployment = self.deployments.get(request.name)
        return registry_pb2.GetDeploymentResponse(
            deployment=deployment_to_pb(deployment)
        )

    def ListDeployments(self, request, context):
        deployments, nxt = self.deployments.list(
            size=request.page_size, token=request.page_token
        )
        return registry_pb2.ListDeploymentsResponse(
            deployments=[deployment_to_pb(d) for d in deployments], next_page_token=nxt
        )

    def RollbackAlias(self, request, context):
        expected = (
            request.expected_artifact_id
            if request.HasField("expected_artifact_id")
            else None
        )
        move = self.registry.aliases.rollback(
            request.name,
            request.alias,
            to_artifact_id=request.to_artifact_id,
            expected_artifact_id=expected,
            reason=request.reason,
            trace_id=current_trace_id(),
            actor=_actor(context),
        )
        return registry_pb2.RollbackAliasResponse(
            artifact=artifact_to_pb(move.artifact),
            previous_artifact_id=move.previous_artifact_id,
        )

    def ListAliasHistory(self, request, context):
        events, nxt = self.registry.aliases.history(
            request.name,
            request.alias,
            size=request.page_size,
            token=request.page_token,
        )
        return registry_pb2.ListAliasHistoryResponse(
            events=[alias_event_to_pb(e) for e in events], next_page_token=nxt
        )

    def ArchiveArtifact(self, request, context):
        artifact = self.registry.archive(
            request.id,
            request.archived,
            reason=request.reason,
            principal=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.ArchiveArtifactResponse(artifact=artifact_to_pb(artifact))

    def UploadBlob(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None:
            raise InvalidArgument(
                "UploadBlob needs a first message with sha256 and size_bytes",
                field="sha256",
            )

        def chunks():
            yield first.data
            for message in request_iterator:
                if message.sha256 and message.sha256 != first.sha256:
                    raise InvalidArgument(
                        "sha256 may only be set on the first message",
                        field="sha256",
                    )
                yield message.data

        existed = self.registry.store.upload(
            first.sha256, first.size_bytes, first.offset, chunks()
        )
        if not existed:
            self.registry.db.write(
                lambda s: audit(
                    s,
                    principal=_actor(context),
                    action="blob.upload",
                    target=f"sha256:{first.sha256}",
                    after={"size_bytes": first.size_bytes},
                    trace_id=current_trace_id(),
                )
            )
        return registry_pb2.UploadBlobResponse(
            sha256=first.sha256, size_bytes=first.size_bytes, existed=existed
        )

    def GetUploadStatus(self, request, context):
        offset, complete = self.registry.store.upload_status(
            check_sha256(request.sha256)
        )
        return registry_pb2.GetUploadStatusResponse(
            committed_offset=offset, complete=complete
        )

    def DownloadBlob(self, request, context):
        size, chunks = self.registry.store.read_blob(
            check_sha256(request.sha256), request.offset
        )
        position = request.offset
        for chunk in chunks:
            yield registry_pb2.DownloadBlobResponse(
                offset=position, data=chunk, size_bytes=size
            )
            position += len(chunk)

    def GetModelCard(self, request, context):
        card = build_card(self.registry, request.id)
        return registry_pb2.GetModelCardResponse(
            markdown=render_markdown(card), card=struct(card)
        )

    def ListAuditEvents(self, request, context):
        events, nxt = self.audit_log.list(
            target=request.target,
            action=request.action,
            start=time_or_none(request.start_time),
            end=time_or_none(request.end_time),
            size=request.page_size,
            token=request.page_token,
        )
        return registry_pb2.ListAuditEventsResponse(
            events=[audit_event_to_pb(e) for e in events], next_page_token=nxt
        )

    def ApplyRetention(self, request, context):
        result = self.maintenance.apply_retention(
            request.name,
            request.keep_last,
            dry_run=request.dry_run,
            principal=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.ApplyRetentionResponse(
            deleted_artifact_ids=result.deleted, kept_artifact_ids=result.kept
        )

    def CollectGarbage(self, request, context):
        # The store is shared by every project: collecting it is for an admin
        # of all of them.
        current_caller().require(ADMIN, ALL_PROJECTS, "CollectGarbage")
        min_age = (
            request.min_age_seconds
            if request.HasField("min_age_seconds")
            else DEFAULT_GC_MIN_AGE_S
        )
        result = self.maintenance.collect_garbage(
            min_age_s=min_age,
            dry_run=request.dry_run,
            principal=_actor(context),
            trace_id=current_trace_id(),
        )
        return registry_pb2.CollectGarbageResponse(
            deleted_blobs=result.deleted_blobs,
            deleted_bytes=result.deleted_bytes,
            deleted_version_dirs=result.deleted_version_dirs,
        )

    # --- API keys -------------------------------------------------------------

    def CreateApiKey(self, request, context):
        info, text = self.api_keys.create(
            request.name,
            dict(request.roles),
            request.ttl_seconds,
            trace_id=current_trace_id(),
        )
        return registry_pb2.CreateApiKeyResponse(key=api_key_to_pb(info), secret=text)

    def ListApiKeys(self, request, context):
        keys = self.api_keys.list(include_revoked=request.include_revoked)
        return registry_pb2.ListApiKeysResponse(keys=[api_key_to_pb(k) for k in keys])

    def RevokeApiKey(self, request, context):
        info = self.api_keys.revoke(request.id, trace_id=current_trace_id())
        return registry_pb2.RevokeApiKeyResponse(key=api_key_to_pb(info))

    def AuthenticateApiKey(self, request, context):
        info = self.api_keys.authenticate(request.id, request.secret_sha256)
        return registry_pb2.AuthenticateApiKeyResponse(key=api_key_to_pb(info))

    def RecordAuditEvent(self, request, context):
        record_denial(
            self.registry.db,
            Denial(
                principal=request.principal,
                method=request.action.removeprefix("denied:"),
                project=request.project,
                code=str(from_struct(request.after).get("code", "")),
                reason=str(from_struct(request.after).get("reason", "")),
                message=str(from_struct(request.after).get("message", "")),
                trace_id=request.trace_id,
            ),
            relayed_by=current_caller().subject,
        )
        return registry_pb2.RecordAuditEventResponse()


def create(config: Config, port: int | None = None) -> RunningServer:
    """Migrates the database, then starts serving; the engine closes on stop."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    dsn = config.effective_registry_dsn
    upgrade_database(dsn)
    db = Database(make_engine(dsn))
    servicer = RegistryServicer(
        Registry(db, LocalStore(config.store_dir), config.readable_roots()),
        ValidationReports(db),
        Deployments(db),
    )

    def register(server: grpc.Server) -> list[str]:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
        return [registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name]

    try:
        # The registry holds the keys and the audit log: it checks keys and
        # records refused calls itself, without a round trip.
        running = create_server(
            "registry",
            config,
            register,
            port,
            key_lookup=servicer.api_keys.authenticate,
            record_denial=lambda denial: record_denial(db, denial),
        )
    except BaseException:
        db.dispose()
        raise
    running.on_stop.append(db.dispose)
    running.parts["api_keys"] = servicer.api_keys
    return running
