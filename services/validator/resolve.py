"""What a validation compares, resolved through the registry before a job is
queued: the candidate's base model, the version the target deployment
serves now and the safety probe set.

Everything here fails fast with a precise status, so a bad request creates
no job: an unknown deployment is NOT_FOUND, a baseline built on another base
than the candidate is FAILED_PRECONDITION (their scores would not be
comparable), a probe set that is not a registered probe dataset is
FAILED_PRECONDITION naming how to make one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.convert import from_struct, struct
from services.common.errors import FailedPrecondition, NotFound, shorten
from services.validator.probes import (
    PROBE_SET_VERSION,
    load_probes,
    shipped_probe_set,
)

MODEL_KINDS = (
    common_pb2.ARTIFACT_KIND_BASE_MODEL,
    common_pb2.ARTIFACT_KIND_MERGED_MODEL,
)
# The registry name of the probe set shipped with the validator.
SHIPPED_PROBE_SET_NAME = "lorafleet-safety-probes"
PROBE_SET_KIND = "safety"


@dataclass
class Version:
    """A model version as served: a base or merged model, maybe an adapter."""

    model: Any
    adapter: Any | None = None

    @property
    def artifact_id(self) -> str:
        return self.adapter.id if self.adapter is not None else self.model.id


class Resolver:
    """Registry lookups a validation needs (`registry` is a registry stub)."""

    def __init__(self, registry: Any, staging_dir: Path) -> None:
        self._registry = registry
        self._staging = staging_dir

    def get(self, ref: str, field: str = "") -> Any:
        try:
            return self._registry.GetArtifact(
                registry_pb2.GetArtifactRequest(id=ref)
            ).artifact
        except NotFound as exc:
            raise NotFound(exc.message, field=field or None) from None

    def model(self, ref: str, field: str) -> Any:
        artifact = self.get(ref, field)
        if artifact.kind not in MODEL_KINDS:
            raise FailedPrecondition(
                f"{ref} is a {common_pb2.ArtifactKind.Name(artifact.kind)}; "
                "validate a base or merged model (pass adapters as adapter_id)",
                field=field,
            )
        return artifact

    def base_of(self, version: Version) -> Any:
        """The base model `version` was made from: an adapter's model, a
        merged model's recorded base_model parent, a base model itself."""
        if version.adapter is not None or (
            version.model.kind == common_pb2.ARTIFACT_KIND_BASE_MODEL
        ):
            return version.model
        lineage = self._registry.GetLineage(
            registry_pb2.GetLineageRequest(id=version.model.id)
        )
        parents = {
            e.parent_id
            for e in lineage.edges
            if e.child_id == version.model.id and e.relation == "base_model"
        }
        by_id = {a.id: a for a in lineage.artifacts}
        for parent in sorted(parents):
            if parent in by_id:
                return by_id[parent]
        return version.model  # registered without lineage: its own reference

    def production(self, deployment: str) -> Version | None:
        """The version `deployment` serves now (its stable target)."""
        try:
            found = self._registry.GetDeployment(
                registry_pb2.GetDeploymentRequest(name=deployment)
            ).deployment
        except NotFound:
            raise NotFound(
                f"deployment {shorten(deployment)!r} does not exist; name a "
                "deployment that serves a version (ListDeployments), or leave "
                "deployment empty to compare with the base model only",
                field="deployment",
            ) from None
        if not found.model_id:
            return None
        model = self.get(found.model_id)
        adapter = self.get(found.adapter_id) if found.adapter_id else None
        return Version(model, adapter)

    # --- the safety probe set ----------------------------------------------------
    def probe_set(self, ref: str) -> Any:
        """The probe dataset `ref`, or the shipped one (registered on first
        use; the registry is content-addressed, so registering it again
        returns the same version)."""
        if not ref:
            return self._register_shipped()
        artifact = self.get(ref, "safety_probe_set_id")
        meta = from_struct(artifact.metadata)
        if (
            artifact.kind != common_pb2.ARTIFACT_KIND_DATASET
            or meta.get("probe_set") != PROBE_SET_KIND
        ):
            raise FailedPrecondition(
                f"safety_probe_set_id {shorten(ref)!r} is "
                f"{artifact.name}:{artifact.version}, a "
                f"{common_pb2.ArtifactKind.Name(artifact.kind)} without metadata "
                f"probe_set={PROBE_SET_KIND!r}; register a probe JSONL as a DATASET "
                f"with that metadata (the shipped one is {SHIPPED_PROBE_SET_NAME}), "
                "or leave safety_probe_set_id empty",
                field="safety_probe_set_id",
            )
        return artifact

    def _register_shipped(self) -> Any:
        source = shipped_probe_set()
        # The registry reads only under its roots: stage a copy there.
        staged = self._staging / "probe-sets" / source.name
        if not staged.is_file() or staged.read_bytes() != source.read_bytes():
            staged.parent.mkdir(parents=True, exist_ok=True)
            tmp = staged.with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(staged)
        probes = load_probes(staged)
        return self._registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                reuse_existing=True,
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name=SHIPPED_PROBE_SET_NAME,
                source_path=str(staged),
                metadata=struct(
                    {
                        "probe_set": PROBE_SET_KIND,
                        "probe_set_version": PROBE_SET_VERSION,
                        "probes": len(probes),
                        "task_type": "chat",
                    }
                ),
            )
        ).artifact
