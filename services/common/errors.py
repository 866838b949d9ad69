"""Domain errors raised by service logic; mapped to gRPC status codes in one place.

Domain modules never import grpc: they raise these, and the server interceptor in
``services.common.server`` turns them into the matching status with the message
intact, so a client can tell a typo from a crash.
"""

from __future__ import annotations


class LorafleetError(Exception):
    """Base of all domain errors; `code` is the canonical gRPC status name."""

    code = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        retry_after_s: float | None = None,
        quota_subject: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        # The request field at fault, sent as a google.rpc.BadRequest detail.
        self.field = field
        # Load shedding (RESOURCE_EXHAUSTED): when to try again, sent as a
        # google.rpc.RetryInfo, and the exhausted resource, as a QuotaFailure.
        self.retry_after_s = retry_after_s
        self.quota_subject = quota_subject
        # A machine-readable cause (google.rpc.ErrorInfo reason and metadata),
        # e.g. PERMISSION_MISSING with the permission and project.
        self.reason = ""
        self.info: dict[str, str] = {}
        # google.rpc details (packed google.protobuf.Any) of an error relayed
        # from another service: sent on unchanged (after `rename_fields`).
        self.details: list = []
        # "service.Method" when the error came from another service.
        self.remote = ""

    def rename_fields(self, renames: dict[str, str]) -> LorafleetError:
        """Rewrites field paths from another request's names to the caller's.

        E.g. {"config": "train_config"} turns the trainer's "config.rank" into
        the gateway caller's "train_config.rank", in `field`, in the message
        and in relayed BadRequest details. Returns self.
        """
        from services.common.error_details import rename_paths

        self.field, self.message, self.details = rename_paths(
            renames, self.field, self.message, self.details
        )
        self.args = (self.message,)
        return self


class InvalidArgument(LorafleetError):
    code = "INVALID_ARGUMENT"


class NotFound(LorafleetError):
    code = "NOT_FOUND"


class AlreadyExists(LorafleetError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(LorafleetError):
    code = "FAILED_PRECONDITION"


class Aborted(LorafleetError):
    """A compare-and-set lost a race; the caller should re-read and retry."""

    code = "ABORTED"


class ResourceExhausted(LorafleetError):
    code = "RESOURCE_EXHAUSTED"


class DataLoss(LorafleetError):
    code = "DATA_LOSS"


class Unavailable(LorafleetError):
    code = "UNAVAILABLE"


class Cancelled(LorafleetError):
    code = "CANCELLED"


class DeadlineExceeded(LorafleetError):
    code = "DEADLINE_EXCEEDED"


class Internal(LorafleetError):
    code = "INTERNAL"


class Unauthenticated(LorafleetError):
    code = "UNAUTHENTICATED"


class PermissionDenied(LorafleetError):
    code = "PERMISSION_DENIED"


def with_reason(err: LorafleetError, reason: str, **info: str) -> LorafleetError:
    """Attaches a google.rpc.ErrorInfo reason (and metadata) to `err`."""
    err.reason = reason
    err.info = {k: str(v) for k, v in info.items()}
    return err


def shorten(value: object, limit: int = 80) -> str:
    """`value` as text of at most `limit` characters, ending in … if it was cut.

    Error messages echo request values so a caller sees what was wrong; a
    10,000-character page token or filter echoed whole would bury the advice
    (and bloat logs and status trailers), so every echo goes through here.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


_BY_CODE = {cls.code: cls for cls in LorafleetError.__subclasses__()}


def from_code(code: str, message: str) -> LorafleetError:
    """Rebuilds the domain error for a status code name (e.g. from a job error)."""
    return _BY_CODE.get(code, Internal)(message)
