"""Auth helpers for services other than the registry, which holds the keys
and the audit log: they ask it to check a key and to record a refusal."""

from __future__ import annotations

from lorafleet.v1 import registry_pb2
from services.common.auth.caller import acting_as
from services.common.auth.denials import Denial
from services.common.auth.keys import ApiKeyInfo
from services.common.clients import ServiceClient
from services.common.config import Config
from services.common.convert import struct


class RegistryAuth:
    """Key checks and refusal records through the registry's internal RPCs.

    Both run on the service's own account (no caller attached): the caller is
    exactly who is not yet trusted.
    """

    def __init__(self, config: Config, service: str) -> None:
        self._config = config
        self._service = service
        self._client: ServiceClient | None = None

    @property
    def client(self) -> ServiceClient:
        if self._client is None:
            self._client = ServiceClient("registry", self._config, caller=self._service)
        return self._client

    def lookup_key(self, key_id: str, secret_sha256: str) -> ApiKeyInfo:
        with acting_as(None):
            reply = self.client.AuthenticateApiKey(
                registry_pb2.AuthenticateApiKeyRequest(
                    id=key_id, secret_sha256=secret_sha256
                )
            )
        k = reply.key
        return ApiKeyInfo(
            key_id=k.id,
            name=k.name,
            roles=dict(k.roles),
            created_by=k.created_by,
            create_time=k.create_time.ToSeconds(),
            expire_time=k.expire_time.ToSeconds()
            if k.HasField("expire_time")
            else None,
        )

    def record_denial(self, denial: Denial) -> None:
        with acting_as(None):
            self.client.RecordAuditEvent(
                registry_pb2.RecordAuditEventRequest(
                    principal=denial.principal,
                    action=f"denied:{denial.method}",
                    target=denial.method,
                    project=denial.project,
                    after=struct(
                        {
                            "code": denial.code,
                            "reason": denial.reason,
                            "message": denial.message,
                        }
                    ),
                    trace_id=denial.trace_id,
                )
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
