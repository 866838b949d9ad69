"""Finding what an earlier attempt of a job registered.

A job registers its result with its job id in the metadata (`train_job_id`,
`merge_job_id`). When a service dies after registering and before marking the
job done, the next attempt finds that artifact and ends with it instead of
registering a second one.
"""

from __future__ import annotations

from typing import Any

from lorafleet.v1 import registry_pb2


def registered_by_job(registry: Any, kind: int, key: str, job_id: str) -> Any | None:
    """The artifact of `kind` whose metadata `key` is `job_id`, if any."""
    found = registry.ListArtifacts(
        registry_pb2.ListArtifactsRequest(
            kind=kind, filter=f'metadata.{key} = "{job_id}"', page_size=1
        )
    ).artifacts
    return found[0] if found else None
