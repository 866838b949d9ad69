"""Starts the six services in this process on ephemeral ports, wired together."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from lorafleet.v1 import (
    gateway_pb2_grpc,
    inference_pb2_grpc,
    merger_pb2_grpc,
    registry_pb2_grpc,
    trainer_pb2_grpc,
    validator_pb2_grpc,
)
from services.common.config import Config, load_config
from services.common.server import RunningServer
from tests.deadlines import stretched_channel

ORDER = ("registry", "trainer", "merger", "validator", "inference", "gateway")
STUBS = {
    "registry": registry_pb2_grpc.RegistryServiceStub,
    "trainer": trainer_pb2_grpc.TrainerServiceStub,
    "merger": merger_pb2_grpc.MergerServiceStub,
    "validator": validator_pb2_grpc.ValidatorServiceStub,
    "inference": inference_pb2_grpc.InferenceServiceStub,
    "gateway": gateway_pb2_grpc.GatewayServiceStub,
}


@dataclass
class Suite:
    config: Config
    servers: dict[str, RunningServer] = field(default_factory=dict)
    channels: list[grpc.Channel] = field(default_factory=list)

    def address(self, name: str) -> str:
        return self.servers[name].address

    def stub(self, name: str):
        channel = stretched_channel(self.address(name))
        self.channels.append(channel)
        return STUBS[name](channel)

    def stop(self) -> None:
        for channel in self.channels:
            channel.close()
        for name in reversed(ORDER):
            if name in self.servers:
                self.servers[name].stop(1.0)

    def start_service(self, name: str, **overrides) -> RunningServer:
        """Starts `name` again on its old port (after `stop_service` or `kill`),
        as a restarted process would be: same address, same data."""
        config = dataclasses.replace(self.config, **overrides)
        port = self.servers[name].port
        module = importlib.import_module(f"services.{name}.server")
        self.servers[name] = module.create(config, port=port)
        return self.servers[name]

    def stop_service(self, name: str, grace_s: float = 0.5) -> None:
        """A graceful stop (SIGTERM): running jobs go back to their queue."""
        self.servers[name].stop(grace_s)


def start_suite(data_dir: Path, **overrides) -> Suite:
    """Starts every service on port 0; each learns the others' real addresses.

    Auth is off unless `auth_mode="required"` (and its settings) is passed:
    tests/test_auth*.py test it; the rest test what they are about.
    """
    overrides.setdefault("auth_mode", "disabled")
    config = load_config(env={}, data_dir=data_dir, port=0, **overrides)
    suite = Suite(config)
    try:
        for name in ORDER:
            module = importlib.import_module(f"services.{name}.server")
            suite.servers[name] = module.create(config, port=0)
            config = dataclasses.replace(
                config, **{f"{name}_address": suite.servers[name].address}
            )
            suite.config = config
    except BaseException:
        suite.stop()
        raise
    return suite
