"""Optional TLS and mutual TLS for every server and client of the suite.

All of it comes from five config fields (``tls_*`` in config.py), so one set
of env vars (``LORAFLEET_TLS_CERT_FILE`` ...) switches a whole deployment, its
healthchecks and the CLI together. With none set everything stays plaintext.

- Server: ``tls_cert_file`` + ``tls_key_file`` make it listen with TLS only;
  ``tls_client_ca_file`` also makes it require a client certificate signed by
  that CA (mTLS).
- Client: ``tls_ca_file`` (else the system roots) verifies the server; the
  same ``tls_cert_file`` + ``tls_key_file`` are presented as the client
  certificate, so a service calling another one that requires mTLS proves
  who it is with the identity it serves with.

Files are read when credentials are built (a server at start-up, a client per
channel), and a missing, unreadable or non-PEM file is a ConfigError naming the
file and the setting, instead of a TLS handshake failing later with a message
that names neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from services.common.config import Config, ConfigError

_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


def _setting(field: str) -> str:
    return f"{field} (LORAFLEET_{field.upper()})"


def _read_pem(config: Config, field: str) -> bytes:
    """The PEM bytes the setting `field` points at; ConfigError when the file
    cannot be read or does not hold what the setting needs."""
    path = getattr(config, field)
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{_setting(field)}: cannot read {path}: {exc.strerror or exc}"
        ) from exc
    if field == "tls_key_file":
        if b"ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data:
            raise ConfigError(
                f"{_setting(field)}: {path} is an encrypted private key; gRPC "
                "needs it unencrypted (e.g. `openssl pkey -in KEY -out KEY.plain`)"
            )
        if b"PRIVATE KEY-----" not in data:
            raise ConfigError(
                f"{_setting(field)}: {path} holds no PEM private key "
                "(no '-----BEGIN ... PRIVATE KEY-----' line)"
            )
    elif _CERTIFICATE not in data:
        raise ConfigError(
            f"{_setting(field)}: {path} holds no PEM certificate "
            "(no '-----BEGIN CERTIFICATE-----' line)"
        )
    return data


def _check_pair(config: Config) -> None:
    """A certificate without its key (or the reverse) is a mistake, not 'off'."""
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        given, missing = (
            ("tls_cert_file", "tls_key_file")
            if config.tls_cert_file
            else ("tls_key_file", "tls_cert_file")
        )
        raise ConfigError(
            f"{_setting(given)} is set but {_setting(missing)} is not: TLS needs "
            "both LORAFLEET_TLS_CERT_FILE and LORAFLEET_TLS_KEY_FILE (or neither "
            "for plaintext)"
        )


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """This server's TLS credentials; None = plaintext (no tls_* set).

    With ``tls_client_ca_file`` the server requires and verifies client
    certificates (mTLS): a caller without one signed by that CA never gets
    past the handshake, so no servicer has to check anything.
    """
    _check_pair(config)
    if not config.tls_cert_file:
        if config.tls_client_ca_file:
            raise ConfigError(
                f"{_setting('tls_client_ca_file')} is set but the server has no "
                "certificate: mTLS needs LORAFLEET_TLS_CERT_FILE and "
                "LORAFLEET_TLS_KEY_FILE too"
            )
        return None
    chain = _read_pem(config, "tls_cert_file")
    pair = (_read_pem(config, "tls_key_file"), chain)
    if config.tls_client_ca_file:
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=_read_pem(config, "tls_client_ca_file"),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([pair])


def channel_credentials(config: Config) -> grpc.ChannelCredentials | None:
    """Credentials for calling a lorafleet server; None = plaintext.

    TLS is on when ``tls_ca_file`` or ``tls_cert_file`` is set: a process that
    serves with TLS expects its peers to as well. The client certificate is
    this process's own cert and key whenever they are set, since a caller
    cannot know whether the server it calls requires one (mTLS is the
    server's ``tls_client_ca_file``, not the caller's).
    """
    _check_pair(config)
    if not (config.tls_ca_file or config.tls_cert_file):
        return None
    root = _read_pem(config, "tls_ca_file") if config.tls_ca_file else None
    key = chain = None
    if config.tls_cert_file:
        chain = _read_pem(config, "tls_cert_file")
        key = _read_pem(config, "tls_key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=root, private_key=key, certificate_chain=chain
    )


def channel_options(config: Config) -> list[tuple[str, Any]]:
    """Channel options TLS needs: the host name to verify in place of the
    address's, when ``tls_server_name`` is set (an address by IP, or one host
    name fronting a certificate issued for another)."""
    if config.tls_server_name:
        return [("grpc.ssl_target_name_override", config.tls_server_name)]
    return []


def secure_or_insecure_channel(
    address: str, config: Config, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A channel to a lorafleet server: TLS per `config`, else plaintext.

    Every channel to a lorafleet service is built here (or by
    ``lorafleet.Client`` with ``client_kwargs``), so one config switches them
    all.
    """
    credentials = channel_credentials(config)
    if credentials is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(
        address, credentials, options=[*options, *channel_options(config)]
    )


def client_kwargs(config: Config) -> dict[str, str]:
    """``lorafleet.Client``'s tls_* keyword arguments for `config` ({} when
    clients are plaintext). The SDK cannot read a Config (it never imports
    services), so the CLI passes these; checking the pair here keeps the
    error the same ConfigError a service would raise."""
    _check_pair(config)
    if not (config.tls_ca_file or config.tls_cert_file):
        return {}
    fields = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name")
    return {name: getattr(config, name) for name in fields if getattr(config, name)}
