"""Trainer queue test support: trainer servers ("replicas") on one job database."""

from __future__ import annotations

import dataclasses

from lorafleet.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from services.trainer.server import create
from tests.common.jobqueue.support import wait_for  # noqa: F401 (re-exported)
from tests.conftest import TRAIN
from tests.deadlines import stretched_channel


class Replica:
    """A trainer server on the shared job database, with its own stub."""

    def __init__(self, suite, dsn: str, worker_id: str, **overrides) -> None:
        self.config = dataclasses.replace(
            suite.config,
            trainer_dsn=dsn,
            trainer_worker_id=worker_id,
            grace_period_s=0.2,
            **overrides,
        )
        self.server = create(self.config, port=0)
        self.channel = stretched_channel(self.server.address)
        self.stub = trainer_pb2_grpc.TrainerServiceStub(self.channel)
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.channel.close()
            self.server.stop(0.2)

    def job(self, job_id: str) -> trainer_pb2.TrainJob:
        return self.stub.GetTrainJob(
            trainer_pb2.GetTrainJobRequest(job_id=job_id), timeout=10
        ).job

    def start(self, base, dataset, name: str, *, steps: int, priority: int = 0):
        config = common_pb2.TrainConfig()
        config.CopyFrom(TRAIN)
        config.max_steps = steps
        config.eval_fraction = 0.0
        request = trainer_pb2.StartTrainJobRequest(
            base_model_id=base.id,
            dataset_id=dataset.id,
            adapter_name=name,
            config=config,
            priority=priority,
        )
        return self.stub.StartTrainJob(request, timeout=60).job

    def watch(self, job_id: str, after: int = 0) -> list:
        return list(
            self.stub.WatchTrainJob(
                trainer_pb2.WatchTrainJobRequest(job_id=job_id, after_sequence=after),
                timeout=300,
            )
        )
