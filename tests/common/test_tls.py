"""TLS and mTLS (services/common/tls.py) against a real gRPC server built by
create_server (a registry stand-in, so no database is involved), with a CA and
certificates made here."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lorafleet.client import Client
from lorafleet.v1 import registry_pb2, registry_pb2_grpc
from services.cli.main import main as cli_main
from services.common.clients import ServiceClient
from services.common.config import Config, ConfigError, load_config
from services.common.errors import Unavailable
from services.common.server import create_server
from services.common.tls import (
    channel_credentials,
    client_kwargs,
    secure_or_insecure_channel,
    server_credentials,
)
from services.local.launcher import check_health

REPO = Path(__file__).resolve().parents[2]
FAIL_FAST_S = 10.0  # only so a broken handshake fails the test quickly


# --- certificates ----------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key=None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


@dataclass
class Issued:
    cert: str
    key: str


class CA:
    """A throwaway certificate authority writing PEM files under `root`."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = str(_write(root / f"{name}.pem", self.cert))

    def issue(self, name: str, dns=(), ips=(), server=True) -> Issued:
        """A leaf certificate; `server` ones may serve and be presented as a
        client certificate (a service calling another), others only the latter."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage(usages), False)
        )
        alt = [x509.DNSName(d) for d in dns]
        alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if alt:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), False)
        cert = builder.sign(self.key, hashes.SHA256())
        path = _write(self.root / f"{name}.pem", cert, key)
        return Issued(cert=str(path), key=str(path.with_suffix(".key")))


@dataclass
class PKI:
    ca: CA
    server: Issued  # localhost + 127.0.0.1, also usable as a client certificate
    client: Issued  # a client certificate from the same CA
    stranger: Issued  # a client certificate from another CA
    elsewhere: Issued  # a server certificate for registry.internal only


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    root = tmp_path_factory.mktemp("pki")
    ca = CA(root, "lorafleet-test-ca")
    other = CA(root, "other-ca")
    return PKI(
        ca=ca,
        server=ca.issue("server", dns=["localhost"], ips=["127.0.0.1"]),
        client=ca.issue("client", server=False),
        stranger=other.issue("stranger", server=False),
        elsewhere=ca.issue("elsewhere", dns=["registry.internal"]),
    )


# --- servers and clients ---------------------------------------------------------
def _server_config(tmp_path: Path, pki: PKI, *, mtls=False, cert=None) -> Config:
    cert = cert or pki.server
    return load_config(
        env={},
        auth_mode="disabled",  # TLS is under test here, not auth
        data_dir=tmp_path / "data",
        port=0,
        tls_cert_file=cert.cert,
        tls_key_file=cert.key,
        tls_ca_file=pki.ca.pem,
        tls_client_ca_file=pki.ca.pem if mtls else None,
    )


def _client_config(**tls) -> Config:
    return load_config(env={}, auth_mode="disabled", **tls)


class StandInRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """The RPCs the tests and the CLI commands below call, answered empty."""

    def ListArtifacts(self, request, context):
        return registry_pb2.ListArtifactsResponse()

    def ListDeployments(self, request, context):
        return registry_pb2.ListDeploymentsResponse()

    def CollectGarbage(self, request, context):
        return registry_pb2.CollectGarbageResponse()


def create_registry(config: Config, port: int):
    def register(server: grpc.Server) -> list[str]:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(
            StandInRegistry(), server
        )
        return [registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name]

    return create_server("registry", config, register, port=port)


@pytest.fixture
def tls_registry(tmp_path, pki):
    running = create_registry(_server_config(tmp_path, pki), port=0)
    yield running
    running.stop(0)


@pytest.fixture
def mtls_registry(tmp_path, pki):
    running = create_registry(_server_config(tmp_path, pki, mtls=True), port=0)
    yield running
    running.stop(0)


def _list(config: Config, address: str) -> registry_pb2.ListArtifactsResponse:
    """A real registry RPC through the services' own client."""
    client = ServiceClient("registry", config, address=address)
    try:
        return client.ListArtifacts(
            registry_pb2.ListArtifactsRequest(), timeout=FAIL_FAST_S
        )
    finally:
        client.close()


def _health_code(channel: grpc.Channel) -> grpc.StatusCode:
    """OK when the health check answers, else the status code of its failure."""
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=FAIL_FAST_S
            )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


# --- (a) TLS ---------------------------------------------------------------------
def test_tls_clients_with_the_ca_reach_the_server(tls_registry, pki):
    address = tls_registry.address  # 127.0.0.1: the IP SAN is checked
    config = _client_config(tls_ca_file=pki.ca.pem)
    assert check_health(address, FAIL_FAST_S, config=config) == "SERVING"
    assert list(_list(config, address).artifacts) == []
    localhost = f"localhost:{tls_registry.port}"  # the DNS SAN
    assert check_health(localhost, FAIL_FAST_S, config=config) == "SERVING"
    with Client(registry=address, tls_ca_file=pki.ca.pem) as client:
        reply = client.registry.ListArtifacts(
            registry_pb2.ListArtifactsRequest(), timeout=FAIL_FAST_S
        )
        assert list(reply.artifacts) == []


def test_plaintext_clients_fail_against_a_tls_server(tls_registry):
    address = tls_registry.address
    plain = _client_config()
    assert channel_credentials(plain) is None
    assert check_health(address, FAIL_FAST_S) == "UNREACHABLE"
    code = _health_code(grpc.insecure_channel(address))
    assert code == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(Unavailable):
        _list(plain, address)
    with Client(registry=address) as client, pytest.raises(grpc.RpcError) as err:
        client.registry.ListArtifacts(
            registry_pb2.ListArtifactsRequest(), timeout=FAIL_FAST_S
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_server_certificate_from_another_ca_is_refused(tls_registry, pki):
    config = _client_config(tls_ca_file=pki.ca.pem)
    foreign = CA(Path(pki.ca.pem).parent, "foreign-roots")
    wrong = _client_config(tls_ca_file=foreign.pem)
    assert check_health(tls_registry.address, FAIL_FAST_S, config=wrong) == (
        "UNREACHABLE"
    )
    # Without tls_ca_file the system roots verify, and they do not know the CA.
    system_roots = _client_config(
        tls_cert_file=pki.client.cert, tls_key_file=pki.client.key
    )
    assert check_health(tls_registry.address, FAIL_FAST_S, config=system_roots) == (
        "UNREACHABLE"
    )
    assert check_health(tls_registry.address, FAIL_FAST_S, config=config) == "SERVING"


def test_server_name_override_for_hosts_not_in_the_certificate(tmp_path, pki):
    running = create_registry(_server_config(tmp_path, pki, cert=pki.elsewhere), port=0)
    try:
        plain_name = _client_config(tls_ca_file=pki.ca.pem)
        named = _client_config(
            tls_ca_file=pki.ca.pem, tls_server_name="registry.internal"
        )
        # 127.0.0.1 is not in the certificate ...
        assert check_health(running.address, FAIL_FAST_S, config=plain_name) == (
            "UNREACHABLE"
        )
        # ... but the name it was issued for is checked instead when given.
        assert check_health(running.address, FAIL_FAST_S, config=named) == "SERVING"
        assert list(_list(named, running.address).artifacts) == []
        with Client(
            registry=running.address,
            tls_ca_file=pki.ca.pem,
            tls_server_name="registry.internal",
        ) as client:
            client.registry.ListArtifacts(
                registry_pb2.ListArtifactsRequest(), timeout=FAIL_FAST_S
            )
    finally:
        running.stop(0)


# --- (c) mTLS --------------------------------------------------------------------
def test_mtls_requires_a_client_certificate_from_the_ca(mtls_registry, pki):
    address = mtls_registry.address
    no_cert = _client_config(tls_ca_file=pki.ca.pem)
    assert check_health(address, FAIL_FAST_S, config=no_cert) == "UNREACHABLE"
    with pytest.raises(Unavailable):
        _list(no_cert, address)

    stranger = _client_config(
        tls_ca_file=pki.ca.pem,
        tls_cert_file=pki.stranger.cert,
        tls_key_file=pki.stranger.key,
    )
    assert check_health(address, FAIL_FAST_S, config=stranger) == "UNREACHABLE"
    with pytest.raises(Unavailable):
        _list(stranger, address)

    client = _client_config(
        tls_ca_file=pki.ca.pem,
        tls_cert_file=pki.client.cert,
        tls_key_file=pki.client.key,
    )
    assert check_health(address, FAIL_FAST_S, config=client) == "SERVING"
    assert list(_list(client, address).artifacts) == []


def test_mtls_between_services_uses_their_own_certificate(mtls_registry, tmp_path, pki):
    """Another service configured like the registry (the same env) calls it
    presenting the certificate it serves with."""
    peer = _server_config(tmp_path / "peer", pki, mtls=True)
    assert list(_list(peer, mtls_registry.address).artifacts) == []


def test_mtls_with_the_sdk_client(mtls_registry, pki):
    request = registry_pb2.ListArtifactsRequest()
    with Client(
        registry=mtls_registry.address,
        tls_ca_file=pki.ca.pem,
        tls_cert_file=pki.client.cert,
        tls_key_file=pki.client.key,
    ) as client:
        client.registry.ListArtifacts(request, timeout=FAIL_FAST_S)
    with Client(registry=mtls_registry.address, tls_ca_file=pki.ca.pem) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.registry.ListArtifacts(request, timeout=FAIL_FAST_S)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# --- the healthcheck command and the CLI -----------------------------------------
def _healthcheck(address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LORAFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "services.common.healthcheck", address],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_healthcheck_command_reads_tls_from_the_env(mtls_registry, pki):
    address = mtls_registry.address
    ok = _healthcheck(
        address,
        {
            "LORAFLEET_TLS_CA_FILE": pki.ca.pem,
            "LORAFLEET_TLS_CERT_FILE": pki.server.cert,
            "LORAFLEET_TLS_KEY_FILE": pki.server.key,
            "LORAFLEET_TLS_CLIENT_CA_FILE": pki.ca.pem,
        },
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
    plain = _healthcheck(address, {})
    assert (plain.returncode, plain.stdout.strip()) == (1, "UNREACHABLE")
    half = _healthcheck(address, {"LORAFLEET_TLS_CERT_FILE": pki.server.cert})
    assert half.returncode == 2
    assert "LORAFLEET_TLS_KEY_FILE" in half.stderr


def test_cli_commands_use_tls_from_the_env(
    tls_registry, pki, monkeypatch, tmp_path, capsys
):
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("LORAFLEET_"):
            monkeypatch.delenv(key)
    address = tls_registry.address
    assert cli_main(["deployments", "list", "--registry", address]) != 0
    capsys.readouterr()
    monkeypatch.setenv("LORAFLEET_TLS_CA_FILE", pki.ca.pem)
    assert cli_main(["deployments", "list", "--registry", address]) == 0
    assert "no deployments" in capsys.readouterr().out
    assert cli_main(["registry", "gc", "--dry-run", "--registry", address]) == 0
    assert "would delete" in capsys.readouterr().out


# --- (d) configuration errors ----------------------------------------------------
def test_tls_off_by_default():
    config = Config(auth_mode="disabled")
    assert server_credentials(config) is None
    assert channel_credentials(config) is None
    assert client_kwargs(config) == {}
    # tls_server_name alone does not turn TLS on
    named = Config(auth_mode="disabled", tls_server_name="registry.internal")
    assert channel_credentials(named) is None
    assert client_kwargs(named) == {}


def test_tls_settings_come_from_env_and_travel_to_children(pki):
    env = {
        "LORAFLEET_TLS_CERT_FILE": pki.server.cert,
        "LORAFLEET_TLS_KEY_FILE": pki.server.key,
        "LORAFLEET_TLS_CLIENT_CA_FILE": pki.ca.pem,
        "LORAFLEET_TLS_CA_FILE": pki.ca.pem,
        "LORAFLEET_TLS_SERVER_NAME": "localhost",
    }
    config = load_config(env=env)
    assert config.tls_cert_file == pki.server.cert
    assert config.tls_server_name == "localhost"
    assert {k: config.as_env()[k] for k in env} == env  # `lorafleet up` children
    assert load_config(env=config.as_env()) == config
    assert client_kwargs(config) == {
        "tls_ca_file": pki.ca.pem,
        "tls_cert_file": pki.server.cert,
        "tls_key_file": pki.server.key,
        "tls_server_name": "localhost",
    }


@pytest.mark.parametrize("given", ["tls_cert_file", "tls_key_file"])
def test_half_configured_tls_is_refused(tmp_path, pki, given):
    path = pki.server.cert if given == "tls_cert_file" else pki.server.key
    config = load_config(
        env={}, auth_mode="disabled", data_dir=tmp_path, port=0, **{given: path}
    )
    for build in (server_credentials, channel_credentials, client_kwargs):
        with pytest.raises(ConfigError) as err:
            build(config)
        assert "LORAFLEET_TLS_CERT_FILE" in str(err.value)
        assert "LORAFLEET_TLS_KEY_FILE" in str(err.value)
    # ... and a service with it does not start
    with pytest.raises(ConfigError, match=given):
        create_server("probe", config, lambda server: [], port=0)


def test_client_ca_without_a_server_certificate_is_refused(pki):
    config = Config(tls_client_ca_file=pki.ca.pem)
    with pytest.raises(ConfigError, match="LORAFLEET_TLS_CLIENT_CA_FILE"):
        server_credentials(config)


@pytest.mark.parametrize(
    "field", ["tls_cert_file", "tls_key_file", "tls_client_ca_file", "tls_ca_file"]
)
def test_unreadable_files_name_the_file_and_the_setting(tmp_path, pki, field):
    missing = str(tmp_path / "nowhere.pem")
    values = {
        "tls_cert_file": pki.server.cert,
        "tls_key_file": pki.server.key,
        "tls_client_ca_file": pki.ca.pem,
        "tls_ca_file": pki.ca.pem,
        field: missing,
    }
    config = Config(**values)
    build = channel_credentials if field == "tls_ca_file" else server_credentials
    with pytest.raises(ConfigError) as err:
        build(config)
    message = str(err.value)
    assert field in message
    assert f"LORAFLEET_{field.upper()}" in message
    assert missing in message


def test_files_that_are_not_pem_are_refused(tmp_path, pki):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    swapped = Config(tls_cert_file=pki.server.key, tls_key_file=pki.server.cert)
    with pytest.raises(ConfigError, match="tls_cert_file.*no PEM certificate"):
        server_credentials(swapped)
    with pytest.raises(ConfigError, match="tls_key_file.*no PEM private key"):
        server_credentials(
            Config(tls_cert_file=pki.server.cert, tls_key_file=pki.server.cert)
        )
    with pytest.raises(ConfigError, match=f"tls_ca_file.*{garbage}"):
        channel_credentials(Config(tls_ca_file=str(garbage)))


def test_sdk_client_refuses_half_a_client_certificate(pki):
    with pytest.raises(ValueError, match="tls_key_file"):
        Client(tls_ca_file=pki.ca.pem, tls_cert_file=pki.client.cert)


def test_without_tls_settings_servers_and_clients_stay_plaintext(tmp_path, pki):
    running = create_registry(
        load_config(env={}, auth_mode="disabled", data_dir=tmp_path, port=0), port=0
    )
    try:
        plain = _client_config()
        channel = secure_or_insecure_channel(running.address, plain)
        assert _health_code(channel) == grpc.StatusCode.OK
        assert check_health(running.address, FAIL_FAST_S) == "SERVING"
        assert list(_list(plain, running.address).artifacts) == []
        # a TLS client does not talk to a plaintext server
        tls = _client_config(tls_ca_file=pki.ca.pem)
        assert check_health(running.address, FAIL_FAST_S, config=tls) == "UNREACHABLE"
    finally:
        running.stop(0)
