"""Checks that can refuse StartRollout, made before anything is written.

A refused request leaves nothing behind: no lock on the deployment, no job,
no deployment revision. The checks: the settings (per strategy), the
deployment and the candidate (resolved in the registry, on the stable
version's base, not what already serves), the candidate's latest validation
report (unless forced, with a reason), and inference loading the candidate.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from lorafleet.v1 import common_pb2, inference_pb2, registry_pb2
from services.common.auth.caller import require
from services.common.auth.permissions import DEPLOY
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    LorafleetError,
    NotFound,
    Unavailable,
    shorten,
)
from services.gateway.admission import NAME_RE
from services.gateway.arms import arms_of
from services.gateway.rollouts import strategies
from services.gateway.rollouts.model import RolloutSpec, Version
from services.gateway.rollouts.settings import RolloutSettings, check_common

MODEL_KINDS = (
    common_pb2.ARTIFACT_KIND_BASE_MODEL,
    common_pb2.ARTIFACT_KIND_MERGED_MODEL,
)
MAX_REASON = 1000


def check_request(
    deployment: str,
    model_id: str,
    settings: RolloutSettings,
    force: bool,
    reason: str,
) -> RolloutSettings:
    """The request's own checks (no calls); the settings with defaults."""
    if not NAME_RE.match(deployment or ""):
        raise InvalidArgument(
            f"deployment {shorten(deployment)!r} must match {NAME_RE.pattern}",
            field="deployment",
        )
    if not model_id:
        raise InvalidArgument(
            "model_id is required: the candidate version (an id, name:version or "
            "name@alias of a merged or base model)",
            field="model_id",
        )
    full = settings.with_defaults()
    strategy = strategies.get(full.strategy)
    check_common(full)
    strategy.check(full)
    if force and not reason.strip():
        raise InvalidArgument(
            "force needs a reason (it is recorded in the audit log)", field="reason"
        )
    if len(reason) > MAX_REASON:
        raise InvalidArgument(
            f"reason is {len(reason)} characters; at most {MAX_REASON}", field="reason"
        )
    return full


class RolloutAdmission:
    """The checks that need the registry and inference."""

    def __init__(self, registry: Any, inference: Any) -> None:
        self._registry = registry
        self._inference = inference

    def spec(
        self,
        deployment: str,
        model_id: str,
        adapter_id: str,
        settings: RolloutSettings,
        force: bool,
        reason: str,
    ) -> RolloutSpec:
        current = self._registry.GetDeployment(
            registry_pb2.GetDeploymentRequest(name=deployment)
        ).deployment
        project = current.project or "default"
        require(DEPLOY, project, f"deployment {deployment!r}")
        stable_arm = next(
            a for a in arms_of(current) if a.role == common_pb2.TARGET_ROLE_STABLE
        )
        stable = self._version(stable_arm.model_id, stable_arm.adapter_id, "")
        candidate = self._version(model_id, adapter_id, "model_id")
        if candidate.same_as(stable.model_id, stable.adapter_id):
            raise FailedPrecondition(
                f"{candidate.label} is what deployment {deployment!r} serves already; "
                "roll out another version",
                field="model_id",
            )
        stable_base = self._base_of(stable)
        candidate_base = self._base_of(candidate)
        if stable_base and candidate_base and stable_base != candidate_base:
            raise FailedPrecondition(
                f"{candidate.label} is built on another base model (digest "
                f"{candidate_base[:19]}...) than {stable.label}, which deployment "
                f"{deployment!r} serves (base {stable_base[:19]}...); roll out a "
                "version of the same base, or Deploy it to another deployment",
                field="model_id",
            )
        report_id = self._check_validation(candidate, force)
        self._check_loadable(candidate)
        alias_before = self._alias_target(candidate, settings.alias)
        return RolloutSpec(
            deployment=deployment,
            project=project,
            settings=settings,
            stable=stable,
            candidate=candidate,
            force=force,
            reason=reason,
            report_id=report_id,
            alias_before=alias_before,
        )

    # --- the candidate -------------------------------------------------------------
    def _artifact(self, ref: str, field: str) -> Any:
        try:
            return self._registry.GetArtifact(
                registry_pb2.GetArtifactRequest(id=ref)
            ).artifact
        except NotFound as exc:
            raise NotFound(exc.message, field=field or None) from None

    def _version(self, model_ref: str, adapter_ref: str, field: str) -> Version:
        model = self._artifact(model_ref, field)
        if model.kind not in MODEL_KINDS:
            raise FailedPrecondition(
                f"{shorten(model_ref)!r} is {model.name}:{model.version}, a "
                f"{common_pb2.ArtifactKind.Name(model.kind)}; a rollout serves a base "
                "or merged model (put an adapter in adapter_id)",
                field=field or None,
            )
        serving = model
        if adapter_ref:
            adapter_field = "adapter_id" if field else ""
            serving = self._artifact(adapter_ref, adapter_field)
            if serving.kind != common_pb2.ARTIFACT_KIND_ADAPTER:
                raise FailedPrecondition(
                    f"{shorten(adapter_ref)!r} is {serving.name}:{serving.version}, "
                    "not an ADAPTER",
                    field=adapter_field or None,
                )
        return Version(
            model_id=model.id,
            adapter_id=serving.id if adapter_ref else "",
            digest=serving.digest,
            label=f"{serving.name}:{serving.version}",
            artifact_name=serving.name,
        )

    def _base_of(self, version: Version) -> str:
        """The digest of the base model a version is built on."""
        artifact = self._artifact(version.artifact_id, "")
        meta = MessageToDict(artifact.metadata) if artifact.HasField("metadata") else {}
        recorded = str(meta.get("base_model_digest", "") or "")
        if recorded:
            return recorded
        if artifact.kind == common_pb2.ARTIFACT_KIND_BASE_MODEL:
            return artifact.digest
        if version.adapter_id:  # an adapter without a recorded base: its model's
            return self._base_of(Version(model_id=version.model_id))
        return ""

    def _check_validation(self, candidate: Version, force: bool) -> str:
        reports = self._registry.ListValidationReports(
            registry_pb2.ListValidationReportsRequest(
                candidate_id=candidate.artifact_id, page_size=1
            )
        ).reports
        latest = reports[0] if reports else None
        if latest is not None and latest.passed:
            return latest.id
        if force:
            return latest.id if latest is not None else ""
        if latest is None:
            raise FailedPrecondition(
                f"{candidate.label} has no validation report; validate it first "
                "(StartValidationJob, or RunWorkflow does it), or set force with a "
                "reason",
                field="model_id",
            )
        failed = [f"{g.name}: {g.message}" for g in latest.gates if not g.passed]
        raise FailedPrecondition(
            f"the latest validation report of {candidate.label}, {latest.id}, did "
            f"not pass (failed gates: {'; '.join(failed) or 'none recorded'}); "
            "validate a better version, or set force with a reason",
            field="model_id",
        )

    def _check_loadable(self, candidate: Version) -> None:
        try:
            self._inference.LoadModel(
                inference_pb2.LoadModelRequest(
                    model_id=candidate.model_id, adapter_id=candidate.adapter_id
                )
            )
        except Unavailable:
            raise
        except LorafleetError as exc:
            raise FailedPrecondition(
                f"inference cannot load {candidate.label}: {exc.code}: {exc.message}",
                field="model_id",
            ) from None

    def _alias_target(self, candidate: Version, alias: str) -> str:
        if not alias:
            return ""
        try:
            return self._registry.ResolveAlias(
                registry_pb2.ResolveAliasRequest(
                    name=candidate.artifact_name, alias=alias
                )
            ).artifact.id
        except NotFound:
            return ""
