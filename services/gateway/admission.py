"""RunWorkflow: every check first, then register, start training, queue.

Nothing is registered or started until every check that could refuse the
request has passed: names, base model, the dataset's rows, the whole train
config (the trainer checks it with `validate_only`, on the dataset file
before it is registered), the gates and the deployment. Errors relayed from
the trainer keep their google.rpc details, with field paths renamed to this
request's ("config.rank" -> "train_config.rank").
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from pathlib import Path
from typing import Any

from lorafleet.v1 import common_pb2, registry_pb2, trainer_pb2
from services.common import datasets
from services.common.config import Config
from services.common.convert import request_digest, struct
from services.common.errors import InvalidArgument, LorafleetError, shorten
from services.common.gates import VALIDATION_MODES, gates_from_pb
from services.common.jobs import Job
from services.common.paths import confine
from services.gateway.records import WorkflowSpec
from services.gateway.steps import initial_details
from services.gateway.workflow_rollout import rollout_settings_of

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,100}$")
# The trainer's StartTrainJobRequest fields, as this request names them.
TRAIN_FIELDS = {"config": "train_config", "dataset_id": "dataset_id"}


def train_request(spec: WorkflowSpec, attempt: int) -> Any:
    """The StartTrainJob request of the workflow's train step (try `attempt`)."""
    return trainer_pb2.StartTrainJobRequest(
        base_model_id=spec.base.id,
        dataset_id=spec.dataset.id,
        adapter_name=f"{spec.name}-lora",
        config=spec.request.train_config,
        tags={"workflow": spec.name},
        request_id=spec.sub_request_id("train", attempt),
    )


class Admission:
    """Checks RunWorkflow requests and starts the accepted ones."""

    def __init__(self, config: Config, clients: dict[str, Any], engine: Any) -> None:
        self._config = config
        self._registry = clients["registry"]
        self._trainer = clients["trainer"]
        self._engine = engine

    def start(self, request: Any) -> Job:
        digest = request_digest(request)
        if request.request_id:
            existing = self._engine.find(request.request_id, digest)
            if existing is not None:
                return existing  # a retry: the workflow the first call started
        name, deployment, dataset_path = self._check_fields(request)
        base = self._get(request.base_model_id, "base_model_id")
        dataset = (
            self._get(request.dataset_id, "dataset_id") if request.dataset_id else None
        )
        self._check_training(request, base, dataset, dataset_path)
        self._engine.check_room()
        # Everything is checked: from here on, things are created.
        if dataset is None:
            dataset = self._register_dataset(dataset_path, name)
        token = (
            hashlib.sha256(request.request_id.encode()).hexdigest()[:24]
            if request.request_id
            else uuid.uuid4().hex
        )
        spec = WorkflowSpec(request, name, deployment, base, dataset, token)
        train_job = self._relayed(
            lambda: self._trainer.StartTrainJob(train_request(spec, 0)).job
        )
        try:
            return self._engine.submit(
                spec,
                request_id=request.request_id,
                digest=digest,
                details=initial_details(
                    dataset, bool(request.dataset_id), train_job.status.job_id
                ),
            )
        except LorafleetError:
            log.warning(
                "workflow refused after train job %s started; cancelling it",
                train_job.status.job_id,
            )
            self._trainer.CancelTrainJob(
                trainer_pb2.CancelTrainJobRequest(job_id=train_job.status.job_id)
            )
            raise

    # --- checks -------------------------------------------------------------------
    def _check_fields(self, request: Any) -> tuple[str, str, Path | None]:
        name = request.name
        if not NAME_RE.match(name):
            raise InvalidArgument(
                f"name {name[:80]!r} must match {NAME_RE.pattern} (it names "
                "the dataset, adapter, merged model and deployment)",
                field="name",
            )
        deployment = request.deployment or name
        if not NAME_RE.match(deployment):
            raise InvalidArgument(
                f"deployment {deployment[:80]!r} must match {NAME_RE.pattern}",
                field="deployment",
            )
        rollout_settings_of(request)  # refuses bad rollout settings now
        if not request.base_model_id:
            raise InvalidArgument(
                "base_model_id is required (id, name:version or "
                "name@alias of a registered base model)",
                field="base_model_id",
            )
        if bool(request.dataset_id) == bool(request.dataset_path):
            raise InvalidArgument(
                "give exactly one of dataset_id (registered dataset) or "
                "dataset_path (JSONL file to register)",
                field="dataset_id",
            )
        for field, value, low, high in (
            ("validation_examples", request.validation_examples, 0, 10000),
            ("validation_max_new_tokens", request.validation_max_new_tokens, 0, 4096),
        ):
            if not low <= value <= high:
                raise InvalidArgument(
                    f"{field} must be in [{low}, {high}] (0 takes the default), "
                    f"got {value}",
                    field=field,
                )
        gates_from_pb(request.gates).check("gates")
        if request.validation_mode not in ("", *VALIDATION_MODES):
            raise InvalidArgument(
                f"unknown validation_mode {shorten(request.validation_mode)!r}; "
                f"known modes: {', '.join(VALIDATION_MODES)}",
                field="validation_mode",
            )
        if request.force and not request.force_reason.strip():
            raise InvalidArgument(
                "force needs a force_reason: deploying past failed validation "
                "gates is recorded in the registry's audit log with its reason",
                field="force_reason",
            )
        path = None
        if request.dataset_path:
            path = confine(
                request.dataset_path,
                self._config.readable_roots(),
                field="dataset_path",
            )
            if path.suffix != ".jsonl" or not path.is_file():
                raise InvalidArgument(
                    f"dataset_path {request.dataset_path[:80]!r} must be a .jsonl file",
                    field="dataset_path",
                )
        return name, deployment, path

    def _check_training(
        self, request: Any, base: Any, dataset: Any, path: Path | None
    ) -> None:
        """The trainer runs every check StartTrainJob would, queuing nothing."""
        check = trainer_pb2.StartTrainJobRequest(
            base_model_id=base.id,
            adapter_name=f"{request.name}-lora",
            config=request.train_config,
            validate_only=True,
        )
        if dataset is not None:
            check.dataset_id = dataset.id
        else:
            check.dataset_path = str(path)
        self._relayed(lambda: self._trainer.StartTrainJob(check))

    # --- actions ------------------------------------------------------------------
    def _get(self, artifact_id: str, field: str) -> Any:
        return self._relayed(
            lambda: (
                self._registry.GetArtifact(
                    registry_pb2.GetArtifactRequest(id=artifact_id)
                ).artifact
            ),
            {"id": field},
        )

    def _register_dataset(self, path: Path, name: str) -> Any:
        task, rows = datasets.load_dataset(path)
        return self._registry.RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                reuse_existing=True,
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name=f"{name}-data",
                source_path=str(path),
                metadata=struct(
                    {"task_type": task, "rows": len(rows), "source": path.name}
                ),
            )
        ).artifact

    @staticmethod
    def _relayed(call, renames: dict[str, str] | None = None) -> Any:
        """Runs `call`; an error from the trainer or registry names this
        request's fields instead of theirs."""
        try:
            return call()
        except LorafleetError as exc:
            raise exc.rename_fields(
                renames if renames is not None else TRAIN_FIELDS
            ) from None
