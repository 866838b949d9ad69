"""The auth rules on their own: every RPC has a permission, roles grant what
they say, keys and role claims parse as documented."""

from __future__ import annotations

import pytest

from lorafleet.v1 import (
    gateway_pb2,
    inference_pb2,
    merger_pb2,
    registry_pb2,
    trainer_pb2,
    validator_pb2,
)
from services.common.auth.caller import ANONYMOUS, Caller
from services.common.auth.keys import new_key, parse_key
from services.common.auth.permissions import (
    ADMIN,
    DEPLOY,
    GENERATE,
    INTERNAL,
    PERMISSIONS,
    READ,
    RPC_PERMISSIONS,
    RUN,
    WRITE,
    permission_for,
)
from services.common.auth.tokens import ServiceTokens, roles_from_claim
from services.common.errors import PermissionDenied, Unauthenticated

MODULES = (
    gateway_pb2,
    inference_pb2,
    merger_pb2,
    registry_pb2,
    trainer_pb2,
    validator_pb2,
)


def every_rpc() -> set[str]:
    return {
        f"/{service.full_name}/{method.name}"
        for module in MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }


def test_every_rpc_of_every_service_has_a_permission():
    rpcs = every_rpc()
    assert rpcs - set(RPC_PERMISSIONS) == set()  # none unguarded by omission
    assert set(RPC_PERMISSIONS) - rpcs == set()  # no stale entries
    assert set(RPC_PERMISSIONS.values()) <= set(PERMISSIONS)


def test_unknown_methods_need_the_internal_permission_and_probes_are_open():
    assert permission_for("/lorafleet.v1.RegistryService/Unlisted") == INTERNAL
    assert permission_for("/grpc.health.v1.Health/Check") is None
    assert permission_for("/grpc.reflection.v1alpha.ServerReflection/X") is None


@pytest.mark.parametrize(
    ("role", "granted", "refused"),
    [
        ("viewer", {READ, GENERATE}, {WRITE, RUN, DEPLOY, ADMIN, INTERNAL}),
        ("operator", {READ, GENERATE, WRITE, RUN, DEPLOY}, {ADMIN, INTERNAL}),
        ("admin", {READ, GENERATE, WRITE, RUN, DEPLOY, ADMIN}, {INTERNAL}),
    ],
)
def test_roles_grant_their_permissions_in_their_project_only(role, granted, refused):
    caller = Caller("key:k", {"team": role}, "team")
    assert {p for p in PERMISSIONS if caller.can(p, "team")} == granted
    assert not any(caller.can(p, "other") for p in PERMISSIONS)
    for permission in refused:
        with pytest.raises(PermissionDenied) as err:
            caller.require(permission, "team", "Thing")
        assert f"needs permission {permission!r} in project 'team'" in err.value.message
        assert err.value.info["permission"] == permission


def test_a_star_role_covers_every_project_and_listing_scopes():
    assert Caller("u", {"*": "viewer"}).projects_with(READ) is None
    assert Caller("u", {"a": "viewer", "b": "operator"}).projects_with(RUN) == {"b"}
    assert ANONYMOUS.can(INTERNAL, "anything")  # auth disabled: everything


def test_role_claims_in_the_shapes_identity_providers_send():
    assert roles_from_claim({"ml": "admin"}, "default") == {"ml": "admin"}
    assert roles_from_claim(["ml:operator", "*:viewer"], "default") == {
        "ml": "operator",
        "*": "viewer",
    }
    assert roles_from_claim("viewer", "default") == {"default": "viewer"}
    assert roles_from_claim(None, "default") == {}


def test_keys_round_trip_and_malformed_ones_are_refused():
    parts, text = new_key()
    assert parse_key(text) == parts
    assert len(parts.secret_sha256) == 64 and parts.secret not in parts.secret_sha256
    for bad in ("lfk_short_x", "lfk_zzzzzzzzzzzz_" + "a" * 40, "nope"):
        with pytest.raises(Unauthenticated):
            parse_key(bad)


def test_service_tokens_carry_the_caller_and_only_verify_with_the_secret():
    alice = Caller("user:alice", {"ml": "operator"}, "ml")
    token = ServiceTokens("s" * 40, "gateway").mint(alice)
    relayed = ServiceTokens("s" * 40, "trainer").verify(token)
    assert (relayed.subject, relayed.project, relayed.via) == (
        "user:alice",
        "ml",
        "gateway",
    )
    assert relayed.display == "user:alice via gateway"
    with pytest.raises(Unauthenticated):
        ServiceTokens("x" * 40, "trainer").verify(token)
    own = ServiceTokens("s" * 40, "x").verify(
        ServiceTokens("s" * 40, "gateway").mint(None)
    )
    assert own.subject == "service:gateway" and own.can(INTERNAL, "any")
