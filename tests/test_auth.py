"""Auth end to end: API keys, JWTs, roles per project, identity relayed through
the gateway and jobs, refused calls audited (issue 13, items 1 and 8).

The whole suite runs in process with auth required; every refusal is checked
for its status, its google.rpc.ErrorInfo reason, that nothing changed, and
(for mutation attempts) its audit record.
"""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from lorafleet.credentials import with_credentials
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
from services.common.auth.caller import SYSTEM, acting_as
from tests.deadlines import stretched_channel
from tests.suite import start_suite

SERVICE_SECRET = "s" * 40
JWT_SECRET = "j" * 40
ISSUER = "https://idp.example.test"
AUDIENCE = "lorafleet"


def make_jwt(
    sub: str,
    roles,
    *,
    secret: str = JWT_SECRET,
    expires_in: float = 600.0,
    issuer: str = ISSUER,
) -> str:
    now = time.time()
    return jwt.encode(
        {
            "sub": sub,
            "iss": issuer,
            "aud": AUDIENCE,
            "iat": int(now),
            "exp": int(now + expires_in),
            "lorafleet_roles": roles,
        },
        secret,
        algorithm="HS256",
    )


class Suite:
    """The suite plus stubs per credential."""

    def __init__(self, suite) -> None:
        self.suite = suite
        self.channels: list[grpc.Channel] = []

    def stubs(self, service: str, **credentials):
        channel = with_credentials(
            stretched_channel(self.suite.address(service)), **credentials
        )
        self.channels.append(channel)
        stub = {
            "gateway": gateway_pb2_grpc.GatewayServiceStub,
            "registry": registry_pb2_grpc.RegistryServiceStub,
            "trainer": trainer_pb2_grpc.TrainerServiceStub,
        }[service]
        return stub(channel)

    def flush_denials(self) -> None:
        for server in self.suite.servers.values():
            denials = server.parts.get("denials")
            if denials is not None:
                denials.flush()


@pytest.fixture(scope="module")
def auth(tmp_path_factory, tiny_model_dir):
    suite = start_suite(
        tmp_path_factory.mktemp("auth-suite"),
        auth_mode="required",
        auth_service_secret=SERVICE_SECRET,
        auth_jwt_secret=JWT_SECRET,
        auth_jwt_issuer=ISSUER,
        auth_jwt_audience=AUDIENCE,
        # A revoked key is refused at once (no cache to outlive).
        auth_key_cache_s=0.0,
    )
    wrapped = Suite(suite)
    keys = suite.servers["registry"].parts["api_keys"]
    with acting_as(SYSTEM):  # what `lorafleet auth keys create --dsn` does
        _, wrapped.admin = keys.create("root", {"*": "admin"})
    admin = wrapped.stubs("registry", api_key=wrapped.admin)

    def key(name: str, roles: dict[str, str]) -> str:
        return admin.CreateApiKey(
            registry_pb2.CreateApiKeyRequest(name=name, roles=roles), timeout=30
        ).secret

    wrapped.key = key
    wrapped.viewer = key("viewer-bot", {"default": "viewer"})
    wrapped.op_a = key("op-a", {"team-a": "operator"})
    wrapped.op_b = key("op-b", {"team-b": "operator"})
    b_registry = wrapped.stubs("registry", api_key=wrapped.op_b)
    wrapped.model_b = import_model(
        tiny_model_dir, "tiny-b", suite.config.staging_dir, b_registry
    )
    a_registry = wrapped.stubs("registry", api_key=wrapped.op_a)
    wrapped.model_a = import_model(
        tiny_model_dir, "tiny-a", suite.config.staging_dir, a_registry
    )
    wrapped.stubs("gateway", api_key=wrapped.op_b).Deploy(
        gateway_pb2.DeployRequest(deployment="b-chat", model_id=wrapped.model_b.id),
        timeout=60,
    )
    yield wrapped
    for channel in wrapped.channels:
        channel.close()
    suite.stop()


def refusal(excinfo) -> tuple[grpc.StatusCode, error_details_pb2.ErrorInfo]:
    err = excinfo.value
    status = rpc_status.from_call(err)
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    return err.code(), info


def audit_events(auth, action: str):
    auth.flush_denials()
    registry = auth.stubs("registry", api_key=auth.admin)
    return list(
        registry.ListAuditEvents(
            registry_pb2.ListAuditEventsRequest(action=action, page_size=100),
            timeout=30,
        ).events
    )


def b_revision(auth) -> int:
    registry = auth.stubs("registry", api_key=auth.admin)
    return registry.GetDeployment(
        registry_pb2.GetDeploymentRequest(name="b-chat"), timeout=30
    ).deployment.revision


def test_health_and_reflection_stay_open(auth):
    channel = stretched_channel(auth.suite.address("gateway"))
    auth.channels.append(channel)
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=30
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_no_credentials_is_unauthenticated_and_audited(auth):
    before = b_revision(auth)
    gateway = auth.stubs("gateway")
    with pytest.raises(grpc.RpcError) as excinfo:
        gateway.Deploy(
            gateway_pb2.DeployRequest(deployment="b-chat", model_id=auth.model_a.id),
            timeout=30,
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert info.reason == "CREDENTIALS_MISSING" and info.domain == "lorafleet.dev"
    assert "authorization: Bearer" in excinfo.value.details()
    assert b_revision(auth) == before
    denied = audit_events(auth, "denied:Deploy")
    assert any(e.principal == "unauthenticated" for e in denied)
    # Reads without credentials are refused too (not audited: not mutations).
    with pytest.raises(grpc.RpcError) as excinfo:
        gateway.ListWorkflowJobs(gateway_pb2.ListWorkflowJobsRequest(), timeout=30)
    assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_expired_jwt_is_refused(auth):
    token = make_jwt("alice", {"*": "admin"}, expires_in=-3600)
    registry = auth.stubs("registry", token=token)
    with pytest.raises(grpc.RpcError) as excinfo:
        registry.SetAlias(
            registry_pb2.SetAliasRequest(artifact_id=auth.model_b.id, alias="prod"),
            timeout=30,
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.UNAUTHENTICATED and info.reason == "TOKEN_EXPIRED"
    assert "expired" in excinfo.value.details()
    admin = auth.stubs("registry", api_key=auth.admin)
    assert not admin.GetArtifact(
        registry_pb2.GetArtifactRequest(id=auth.model_b.id), timeout=30
    ).artifact.aliases
    assert any(
        e.principal == "unauthenticated"
        and e.project == ""
        or e.after["reason"] == "TOKEN_EXPIRED"
        for e in audit_events(auth, "denied:SetAlias")
    )


def test_jwt_signed_with_another_key_is_refused(auth):
    token = make_jwt("mallory", {"*": "admin"}, secret="x" * 40)
    with pytest.raises(grpc.RpcError) as excinfo:
        auth.stubs("registry", token=token).ListArtifacts(
            registry_pb2.ListArtifactsRequest(), timeout=30
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert info.reason == "TOKEN_BAD_SIGNATURE"


def test_jwt_from_the_wrong_issuer_is_refused(auth):
    token = make_jwt("eve", {"*": "admin"}, issuer="https://other.example")
    with pytest.raises(grpc.RpcError) as excinfo:
        auth.stubs("registry", token=token).ListArtifacts(
            registry_pb2.ListArtifactsRequest(), timeout=30
        )
    assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_valid_jwt_gets_its_roles_per_project(auth):
    token = make_jwt("carol@example.test", ["team-b:viewer"])
    registry = auth.stubs("registry", token=token)
    names = {
        a.name
        for a in registry.ListArtifacts(
            registry_pb2.ListArtifactsRequest(), timeout=30
        ).artifacts
    }
    assert names == {"tiny-b"}  # team-a's model is not listed
    with pytest.raises(grpc.RpcError) as excinfo:
        registry.GetArtifact(
            registry_pb2.GetArtifactRequest(id=auth.model_a.id), timeout=30
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert info.metadata["permission"] == "read"
    assert info.metadata["project"] == "team-a"


def test_revoked_key_is_refused(auth):
    text = auth.key("short-lived", {"team-a": "operator"})
    registry = auth.stubs("registry", api_key=text)
    registry.ListArtifacts(registry_pb2.ListArtifactsRequest(), timeout=30)
    admin = auth.stubs("registry", api_key=auth.admin)
    key_id = text.split("_")[1]
    revoked = admin.RevokeApiKey(
        registry_pb2.RevokeApiKeyRequest(id=key_id), timeout=30
    ).key
    assert revoked.HasField("revoke_time") and revoked.revoked_by == "key:root"
    with pytest.raises(grpc.RpcError) as excinfo:
        auth.stubs("gateway", api_key=text).Deploy(
            gateway_pb2.DeployRequest(deployment="a-chat", model_id=auth.model_a.id),
            timeout=30,
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.UNAUTHENTICATED and info.reason == "KEY_REVOKED"
    assert "revoked by key:root" in excinfo.value.details()
    with pytest.raises(grpc.RpcError):
        auth.stubs("registry", api_key=text).ListArtifacts(
            registry_pb2.ListArtifactsRequest(), timeout=30
        )
    with pytest.raises(grpc.RpcError) as excinfo:
        admin.GetDeployment(
            registry_pb2.GetDeploymentRequest(name="a-chat"), timeout=30
        )
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND  # nothing deployed
    listed = admin.ListApiKeys(registry_pb2.ListApiKeysRequest(), timeout=30).keys
    assert key_id not in {k.id for k in listed}
    assert all(k.id and not hasattr(k, "secret") for k in listed)


def test_viewer_cannot_deploy(auth):
    before = b_revision(auth)
    gateway = auth.stubs("gateway", api_key=auth.viewer)
    with pytest.raises(grpc.RpcError) as excinfo:
        gateway.Deploy(
            gateway_pb2.DeployRequest(deployment="v-chat", model_id=auth.model_b.id),
            timeout=30,
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert info.reason == "PERMISSION_MISSING"
    assert info.metadata["permission"] == "deploy"
    assert "needs permission 'deploy'" in excinfo.value.details()
    assert "key:viewer-bot has role viewer" in excinfo.value.details()
    assert b_revision(auth) == before
    denied = audit_events(auth, "denied:Deploy")
    assert any(e.principal == "key:viewer-bot" for e in denied)


def test_operator_cannot_act_on_another_project(auth):
    before = b_revision(auth)
    gateway = auth.stubs("gateway", api_key=auth.op_a)
    with pytest.raises(grpc.RpcError) as excinfo:
        gateway.Deploy(
            gateway_pb2.DeployRequest(deployment="b-chat", model_id=auth.model_a.id),
            timeout=30,
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.PERMISSION_DENIED, excinfo.value.details()
    assert info.metadata["project"] == "team-b"
    assert b_revision(auth) == before
    # Naming the other project outright is refused at the door, and audited.
    with pytest.raises(grpc.RpcError) as excinfo:
        auth.stubs("gateway", api_key=auth.op_a, project="team-b").Rollback(
            gateway_pb2.RollbackRequest(deployment="b-chat"), timeout=30
        )
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert b_revision(auth) == before
    denied = audit_events(auth, "denied:Rollback")
    assert any(e.principal == "key:op-a" and e.project == "team-b" for e in denied)
    # And team-b's artifacts cannot be aliased from team-a.
    with pytest.raises(grpc.RpcError) as excinfo:
        auth.stubs("registry", api_key=auth.op_a).SetAlias(
            registry_pb2.SetAliasRequest(artifact_id=auth.model_b.id, alias="x"),
            timeout=30,
        )
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_audit_names_the_authenticated_caller_never_an_asserted_one(auth):
    gateway = auth.stubs("gateway", api_key=auth.op_b)
    gateway.Deploy(
        gateway_pb2.DeployRequest(
            deployment="b-chat", model_id=auth.model_b.id, reason="again"
        ),
        timeout=60,
        metadata=(("lorafleet-actor", "somebody-else"),),
    )
    registry = auth.stubs("registry", api_key=auth.admin)
    deployment = registry.GetDeployment(
        registry_pb2.GetDeploymentRequest(name="b-chat"), timeout=30
    ).deployment
    assert deployment.updated_by == "key:op-b via gateway"
    assert deployment.project == "team-b"
    puts = audit_events(auth, "deployment.put")
    assert puts[0].principal == "key:op-b via gateway"
    assert puts[0].project == "team-b"
    assert all("somebody-else" not in e.principal for e in puts)
    registered = audit_events(auth, "artifact.register")
    assert {e.principal for e in registered} >= {"key:op-a", "key:op-b"}


def test_jobs_belong_to_the_project_and_run_as_their_submitter(auth, tmp_path):
    data = auth.suite.config.data_dir / "datasets"
    data.mkdir(exist_ok=True)
    rows = data / "tiny.jsonl"
    rows.write_text(
        "\n".join(
            '{"instruction": "Say hi", "input": "", "output": "hi"}' for _ in range(8)
        )
        + "\n"
    )
    dataset = (
        auth.stubs("registry", api_key=auth.op_a)
        .RegisterArtifact(
            registry_pb2.RegisterArtifactRequest(
                kind=common_pb2.ARTIFACT_KIND_DATASET,
                name="tiny-data",
                source_path=str(rows),
            ),
            timeout=60,
        )
        .artifact
    )
    assert dataset.project == "team-a"
    trainer = auth.stubs("trainer", api_key=auth.op_a)
    job = trainer.StartTrainJob(
        trainer_pb2.StartTrainJobRequest(
            base_model_id=auth.model_a.id,
            dataset_id=dataset.id,
            adapter_name="tiny-a-adapter",
            config=common_pb2.TrainConfig(
                rank=2, max_steps=1, batch_size=2, max_seq_length=32, seed=1
            ),
        ),
        timeout=60,
    ).job
    assert job.status.project == "team-a"
    assert job.status.created_by == "key:op-a"
    job_id = job.status.job_id
    other = auth.stubs("trainer", api_key=auth.op_b)
    with pytest.raises(grpc.RpcError) as excinfo:
        other.GetTrainJob(trainer_pb2.GetTrainJobRequest(job_id=job_id), timeout=30)
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as excinfo:
        other.CancelTrainJob(
            trainer_pb2.CancelTrainJobRequest(job_id=job_id), timeout=30
        )
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = other.ListTrainJobs(trainer_pb2.ListTrainJobsRequest(), timeout=30).jobs
    assert job_id not in {j.status.job_id for j in listed}
    events = list(
        trainer.WatchTrainJob(
            trainer_pb2.WatchTrainJobRequest(job_id=job_id), timeout=600
        )
    )
    final = trainer.GetTrainJob(
        trainer_pb2.GetTrainJobRequest(job_id=job_id), timeout=30
    ).job
    assert final.status.state == common_pb2.JOB_STATE_SUCCEEDED, events[-1]
    adapter = (
        auth.stubs("registry", api_key=auth.admin)
        .GetArtifact(
            registry_pb2.GetArtifactRequest(id=final.result.adapter_id), timeout=30
        )
        .artifact
    )
    assert adapter.project == "team-a"
    registered = audit_events(auth, "artifact.register")
    mine = [e for e in registered if e.target == adapter.id]
    assert mine and mine[0].principal == "key:op-a via trainer"


def test_key_management_is_for_admins_of_the_projects(auth):
    registry = auth.stubs("registry", api_key=auth.op_a)
    with pytest.raises(grpc.RpcError) as excinfo:
        registry.CreateApiKey(
            registry_pb2.CreateApiKeyRequest(name="x", roles={"team-a": "admin"}),
            timeout=30,
        )
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert any(
        e.principal == "key:op-a" for e in audit_events(auth, "denied:CreateApiKey")
    )
    team_admin = auth.key("team-a-admin", {"team-a": "admin"})
    scoped = auth.stubs("registry", api_key=team_admin)
    created = scoped.CreateApiKey(
        registry_pb2.CreateApiKeyRequest(name="ci", roles={"team-a": "viewer"}),
        timeout=30,
    )
    assert created.secret.startswith(f"lfk_{created.key.id}_")
    with pytest.raises(grpc.RpcError) as excinfo:
        scoped.CreateApiKey(
            registry_pb2.CreateApiKeyRequest(name="x", roles={"team-b": "viewer"}),
            timeout=30,
        )
    assert excinfo.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as excinfo:
        auth.stubs("registry", api_key=auth.admin).CreateApiKey(
            registry_pb2.CreateApiKeyRequest(name="x", roles={"team-a": "owner"}),
            timeout=30,
        )
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown role 'owner'" in excinfo.value.details()
    listed = scoped.ListApiKeys(registry_pb2.ListApiKeysRequest(), timeout=30).keys
    assert {k.name for k in listed} == {"op-a", "team-a-admin", "ci"}


def test_internal_rpcs_refuse_people(auth):
    with pytest.raises(grpc.RpcError) as excinfo:
        auth.stubs("registry", api_key=auth.admin).AuthenticateApiKey(
            registry_pb2.AuthenticateApiKeyRequest(id="0" * 12, secret_sha256="0"),
            timeout=30,
        )
    code, info = refusal(excinfo)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert info.metadata["permission"] == "internal"
