"""Versions are immutable: the same files with other facts are refused, never
silently dropped; tags and the description change through UpdateArtifact,
audited."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from lorafleet.v1 import common_pb2, registry_pb2
from services.common.convert import struct

BASE_MODEL = common_pb2.ARTIFACT_KIND_BASE_MODEL
ADAPTER = common_pb2.ARTIFACT_KIND_ADAPTER


def test_the_same_files_with_new_metadata_are_a_failed_precondition(
    stub, sources, register
):
    base = register(BASE_MODEL, "smol", sources.model()).artifact
    path = sources.adapter()
    first = register(ADAPTER, "lora", path).artifact
    # the case: the same bytes again, now naming the base
    with pytest.raises(grpc.RpcError) as err:
        register(
            ADAPTER,
            "lora",
            path,
            metadata=struct({"base_model_id": base.id}),
            parents=[common_pb2.ParentRef(artifact_id=base.id)],
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = err.value.details()
    assert f"already registered as lora:1 ({first.id})" in message
    assert "metadata (base_model_id)" in message and "immutable" in message
    stored = stub.GetArtifact(registry_pb2.GetArtifactRequest(id=first.id)).artifact
    assert "base_model_id" not in stored.metadata  # nothing changed
    # the same facts again (a retry) return the version, as before
    again = register(ADAPTER, "lora", path)
    assert again.existed and again.artifact.id == first.id
    with pytest.raises(grpc.RpcError) as err:
        register(ADAPTER, "lora", path, tags={"stage": "prod"})
    assert "tags (stage)" in err.value.details()
    assert "UpdateArtifact" in err.value.details()


def test_update_artifact_changes_tags_and_description_and_is_audited(
    stub, sources, register
):
    model = register(BASE_MODEL, "smol", sources.model(), tags={"a": "1"}).artifact
    updated = stub.UpdateArtifact(
        registry_pb2.UpdateArtifactRequest(
            id="smol:1",
            tags={"stage": "prod"},
            description="the base we serve",
            update_mask=field_mask_pb2.FieldMask(paths=["tags", "description"]),
        )
    ).artifact
    assert dict(updated.tags) == {"stage": "prod"}
    assert updated.description == "the base we serve"
    assert updated.digest == model.digest and updated.version == 1
    only_description = stub.UpdateArtifact(
        registry_pb2.UpdateArtifactRequest(
            id=model.id,
            description="v1",
            update_mask=field_mask_pb2.FieldMask(paths=["description"]),
        )
    ).artifact
    assert dict(only_description.tags) == {"stage": "prod"}
    events = stub.ListAuditEvents(
        registry_pb2.ListAuditEventsRequest(action="artifact.update")
    ).events
    assert len(events) == 2 and events[1].before["tags"]["a"] == "1"
    for mask, words in ((["metadata"], "only tags and description"), ([], "empty")):
        with pytest.raises(grpc.RpcError) as err:
            stub.UpdateArtifact(
                registry_pb2.UpdateArtifactRequest(
                    id=model.id, update_mask=field_mask_pb2.FieldMask(paths=mask)
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in err.value.details()
