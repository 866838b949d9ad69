"""Every RPC in protos/ has a real implementation in its service's servicer.

The generated `*_pb2_grpc.py` base classes answer every method with
UNIMPLEMENTED (`raise NotImplementedError('Method not implemented!')`); a
servicer that forgets to override one would ship that to users. This test
fails when a proto gains an RPC that no servicer implements.
"""

from __future__ import annotations

import importlib

import pytest

SERVICES = {
    "registry": ("services.registry.server", "RegistryService"),
    "trainer": ("services.trainer.server", "TrainerService"),
    "merger": ("services.merger.server", "MergerService"),
    "validator": ("services.validator.server", "ValidatorService"),
    "inference": ("services.inference.server", "InferenceService"),
    "gateway": ("services.gateway.server", "GatewayService"),
}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_rpc_is_overridden_by_the_servicer(name: str) -> None:
    module_name, service = SERVICES[name]
    pb2 = importlib.import_module(f"lorafleet.v1.{name}_pb2")
    generated = getattr(
        importlib.import_module(f"lorafleet.v1.{name}_pb2_grpc"), f"{service}Servicer"
    )
    module = importlib.import_module(module_name)
    servicers = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, generated) and c is not generated
    ]
    assert len(servicers) == 1, servicers
    rpcs = [m.name for m in pb2.DESCRIPTOR.services_by_name[service].methods]
    assert rpcs, f"{service} declares no RPCs"
    missing = [m for m in rpcs if getattr(servicers[0], m) is getattr(generated, m)]
    assert missing == [], f"{service} RPCs left UNIMPLEMENTED: {missing}"
