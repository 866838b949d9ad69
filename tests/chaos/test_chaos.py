"""Chaos: workflows on PostgreSQL while each service is SIGKILLed in turn.

`lorafleet up` supervises the six services as real processes, each with its
own PostgreSQL database and spans exported over OTLP to a collector in this
test. Workflows on a tiny model run while a driver SIGKILLs the gateway, the
trainer, the merger, the validator and the registry, one after the other,
each at a random moment once the workflows are at a stage it serves; the
supervisor restarts each one. Every workflow must end SUCCEEDED exactly once,
with exactly one adapter, one merged model and one deployment revision, no
orphan artifacts, and one trace id across all the services' spans of it.

Run alone: `.venv/bin/python -m pytest -m chaos -s` (prints the kills).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from lorafleet.v1 import (
    common_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.cli.models import import_model
from services.local.launcher import free_port_block
from tests.chaos.collector import Collector
from tests.common.jobqueue.support import fresh_pg_database
from tests.conftest import LENIENT, TRAIN
from tests.deadlines import stretched_channel

pytestmark = [pytest.mark.chaos, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
DATABASES = ("registry", "trainer", "merger", "validator", "gateway")
VICTIMS = ("gateway", "trainer", "merger", "validator", "registry")
WORKFLOWS = 3
RUNNING, SUCCEEDED = common_pb2.JOB_STATE_RUNNING, common_pb2.JOB_STATE_SUCCEEDED
TERMINAL = (SUCCEEDED, common_pb2.JOB_STATE_FAILED, common_pb2.JOB_STATE_CANCELLED)
# Generous bounds that only stop a hung test; nothing is timed against them.
STARTUP_S, RESTART_S, FINISH_S = 900, 600, 1500


class Up:
    """`lorafleet up` in a subprocess, its output gathered line by line."""

    def __init__(self, data_dir: Path, base_port: int, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                "--data-dir",
                str(data_dir),
                "up",
                "--base-port",
                str(base_port),
                "--restart-backoff",
                "0.5",
                # Never the default 9464...: another suite may hold those.
                "--metrics-base-port",
                str(free_port_block()),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_line(
        self, match: Callable[[str], bool], timeout_s: float, start: int = 0
    ) -> str:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if match(line):
                        return line
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "lorafleet up never printed the line awaited; its output:\n"
                        + "\n".join(self.lines[-60:])
                    )
                self._cond.wait(1.0)

    def pid(self, name: str) -> int:
        """The service's current pid, from the start-up and restart lines."""
        pid = 0
        with self._cond:
            for line in self.lines:
                words = line.split()
                if words[:1] == [name] and "pid" in words:
                    pid = int(words[words.index("pid") + 1])
                elif line.startswith(f"lorafleet up: {name} restarted (pid "):
                    pid = int(line.split("(pid ")[1].split(",")[0])
        assert pid, f"no pid of {name} in the output"
        return pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def retrying(call: Callable, timeout_s: float = RESTART_S):
    """`call()`, retried while the service it reaches is restarting."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if (
                exc.code()
                not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                or time.monotonic() > deadline
            ):
                raise
            time.sleep(0.5)


def workflow_request(base, data: Path, i: int) -> gateway_pb2.RunWorkflowRequest:
    config = common_pb2.TrainConfig()
    config.CopyFrom(TRAIN)
    config.max_steps = 40
    config.checkpoint_steps = 10
    return gateway_pb2.RunWorkflowRequest(
        base_model_id=base.id,
        dataset_path=str(data),
        name=f"chaos-{i}",
        train_config=config,
        gates=LENIENT,
        validation_examples=2,
        validation_max_new_tokens=4,
        request_id=f"chaos-request-{i}",
    )


def steps_of(job) -> dict[str, int]:
    return {s.name: s.state for s in job.steps}


# What the workflows must be doing when each victim is killed.
MOMENTS = {
    "gateway": lambda jobs: any(steps_of(j).get("train") == RUNNING for j in jobs),
    "trainer": lambda jobs: any(
        steps_of(j).get("train") == RUNNING and j.status.message.startswith("train: ")
        for j in jobs
    ),
    "merger": lambda jobs: any(steps_of(j).get("merge") == RUNNING for j in jobs),
    "validator": lambda jobs: any(steps_of(j).get("validate") == RUNNING for j in jobs),
    "registry": lambda jobs: any(j.status.state not in TERMINAL for j in jobs),
}


def test_workflows_survive_every_service_being_killed(
    tmp_path, tiny_model_dir, demo_dataset_path
):
    rng = random.Random(int(os.environ.get("LORAFLEET_CHAOS_SEED", "7")))
    with ExitStack() as stack:
        dsns = {
            name: stack.enter_context(fresh_pg_database(f"chaos_{name}"))
            for name in DATABASES
        }
        collector = Collector()
        stack.callback(collector.stop)
        env = {
            **os.environ,
            **{f"LORAFLEET_{name.upper()}_DSN": dsn for name, dsn in dsns.items()},
            "LORAFLEET_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "LORAFLEET_GRACE_PERIOD_S": "2",
            "LORAFLEET_DEPENDENCY_PATIENCE_S": str(RESTART_S),
            "PYTHONUNBUFFERED": "1",
        }
        base_port = free_port_block()
        up = Up(tmp_path, base_port, env)
        stack.callback(up.stop)
        up.wait_line(lambda line: line.startswith("all services SERVING"), STARTUP_S)

        channels = {
            name: stack.enter_context(
                stretched_channel(f"127.0.0.1:{base_port + offset}")
            )
            for name, offset in (("gateway", 0), ("registry", 1), ("trainer", 2))
        }
        gateway = gateway_pb2_grpc.GatewayServiceStub(channels["gateway"])
        registry = registry_pb2_grpc.RegistryServiceStub(channels["registry"])
        trainer = trainer_pb2_grpc.TrainerServiceStub(channels["trainer"])

        base = import_model(
            tiny_model_dir, "tiny-llama", tmp_path / "staging", registry
        )
        data = tmp_path / "datasets" / "orders.jsonl"
        data.parent.mkdir()
        shutil.copy(demo_dataset_path, data)
        started = [
            retrying(
                lambda i=i: gateway.RunWorkflow(
                    workflow_request(base, data, i), timeout=120
                )
            ).job
            for i in range(WORKFLOWS)
        ]
        ids = [j.status.job_id for j in started]

        def workflows() -> list:
            return [
                retrying(
                    lambda i=i: gateway.GetWorkflowJob(
                        gateway_pb2.GetWorkflowJobRequest(job_id=i), timeout=30
                    )
                ).job
                for i in ids
            ]

        kills = []
        for victim in VICTIMS:
            deadline = time.monotonic() + RESTART_S
            while not MOMENTS[victim](jobs := workflows()):
                if time.monotonic() > deadline or all(
                    j.status.state in TERMINAL for j in jobs
                ):
                    break
                time.sleep(0.1)
            in_moment = MOMENTS[victim](jobs)
            time.sleep(rng.uniform(0.0, 1.5))
            mark = len(up.lines)
            os.kill(up.pid(victim), signal.SIGKILL)
            kills.append({"service": victim, "mid_stage": in_moment})
            up.wait_line(
                lambda line, v=victim: f"{v} SERVING again" in line, RESTART_S, mark
            )

        deadline = time.monotonic() + FINISH_S
        finals = workflows()
        while not all(j.status.state in TERMINAL for j in finals):
            assert time.monotonic() < deadline, [j.status for j in finals]
            time.sleep(1.0)
            finals = workflows()
        survived = sum(1 for line in up.lines if "SERVING again" in line)
        print("chaos kills:", json.dumps(kills), "restarts survived:", survived)

        # Every workflow succeeded, once.
        for job in finals:
            assert job.status.state == SUCCEEDED, (job.status.job_id, job.status.error)
            assert all(s.state == SUCCEEDED for s in job.steps), job.steps
        listed = retrying(
            lambda: gateway.ListWorkflowJobs(
                gateway_pb2.ListWorkflowJobsRequest(page_size=100), timeout=30
            )
        ).jobs
        assert sorted(j.status.job_id for j in listed) == sorted(ids)

        # One training, adapter, merged model and deployment revision each;
        # nothing else registered (no orphans).
        train_jobs = retrying(
            lambda: trainer.ListTrainJobs(
                trainer_pb2.ListTrainJobsRequest(page_size=100), timeout=30
            )
        ).jobs
        assert Counter(j.request.adapter_name for j in train_jobs) == Counter(
            f"chaos-{i}-lora" for i in range(WORKFLOWS)
        )
        for kind, suffix in (
            (common_pb2.ARTIFACT_KIND_ADAPTER, "-lora"),
            (common_pb2.ARTIFACT_KIND_MERGED_MODEL, ""),
        ):
            artifacts = retrying(
                lambda kind=kind: registry.ListArtifacts(
                    registry_pb2.ListArtifactsRequest(kind=kind, page_size=100),
                    timeout=30,
                )
            ).artifacts
            assert Counter(a.name for a in artifacts) == Counter(
                f"chaos-{i}{suffix}" for i in range(WORKFLOWS)
            )
        for i, job in enumerate(finals):
            deployment = retrying(
                lambda i=i: registry.GetDeployment(
                    registry_pb2.GetDeploymentRequest(name=f"chaos-{i}"), timeout=30
                )
            ).deployment
            assert deployment.revision == 1
            assert deployment.model_id == job.result.merged_model_id

        up.stop()  # a graceful stop flushes every service's spans
        spans = collector.snapshot()
        for job in finals:
            sub_jobs = {
                job.status.job_id,
                job.train_job_id,
                job.merge_job_id,
                job.validation_job_id,
            }
            of_job = [
                s for s in spans if s.attributes.get("lorafleet.job_id") in sub_jobs
            ]
            assert {s.trace_id for s in of_job} == {job.status.trace_id}
            traced = {s.service for s in spans if s.trace_id == job.status.trace_id}
            assert {f"lorafleet-{name}" for name in VICTIMS} <= traced, traced
        assert len(kills) == len(VICTIMS) and survived >= len(VICTIMS)
