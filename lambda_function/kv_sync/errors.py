"""The error types the function reports.

Each has a stable ``type`` that scripts and alarms key on, an HTTP status,
``is_retryable`` and a message a person can act on. Messages are redacted when
the error is created, so no secret reaches a reply, a log line or a trace
through one.
"""

from __future__ import annotations

from typing import ClassVar

from kv_sync.redaction import redact


class SyncError(Exception):
    """Base class of every failure the function reports.

    Parameters
    ----------
    message
        What went wrong and what to do about it; safe to show to callers.
    is_retryable
        Overrides the class default when the same type can be either.
    retry_after
        Seconds the caller should wait before retrying, when known.
    """

    type: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    severity: ClassVar[str] = "error"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self, message: str, *, is_retryable: bool | None = None, retry_after: float | None = None
    ) -> None:
        self.message = redact(message)
        super().__init__(self.message)
        self.is_retryable = self.default_retryable if is_retryable is None else is_retryable
        self.retry_after = retry_after


class ValidationError(SyncError):
    """The event or request is malformed; fix the input."""

    type, http_status, severity = "VALIDATION_ERROR", 400, "warning"


class MethodNotAllowedError(ValidationError):
    """The Function URL was called with a method other than GET or POST."""

    type, http_status = "METHOD_NOT_ALLOWED", 405


class ConfigurationError(SyncError):
    """The deployment is wrong: environment, secret, namespace or table."""

    type, severity = "CONFIGURATION_ERROR", "critical"


class AuthError(SyncError):
    """Cloudflare rejected the API token, even after the secret was re-read."""

    type, http_status, severity = "AUTH_ERROR", 502, "critical"


class NotFoundError(SyncError):
    """The KV key does not exist."""

    type, http_status, severity = "NOT_FOUND", 404, "warning"


class RateLimitedError(SyncError):
    """Cloudflare's request budget is used up, or it kept answering 429."""

    type, http_status, default_retryable = "RATE_LIMITED", 503, True


class ApiError(SyncError):
    """Cloudflare answered with an error or a reply that cannot be read."""

    type, http_status = "API_ERROR", 502


class DeadlineError(SyncError):
    """A call did not finish in time, or the deadline left no time for one."""

    type, http_status, default_retryable = "TIMEOUT", 504, True


class NetworkError(SyncError):
    """The connection to Cloudflare failed (refused, reset or cut short)."""

    type, http_status, default_retryable = "NETWORK_ERROR", 502, True


class ValueTooLargeError(SyncError):
    """The value does not fit in a DynamoDB item, even gzip-compressed."""

    type, http_status = "VALUE_TOO_LARGE", 422


class ConflictError(SyncError):
    """Another multi-key run holds the namespace's lease; this one waits its turn."""

    type, http_status, default_retryable = "CONFLICT", 409, True


class DeletionRefusedError(SyncError):
    """The deletion guard stopped a run that would delete too much; nothing was deleted."""

    type, http_status, severity = "DELETION_REFUSED", 409, "critical"


class StorageError(SyncError):
    """DynamoDB refused or failed a call."""

    type = "STORAGE_ERROR"


class InternalError(SyncError):
    """A bug: something failed that the function does not expect."""

    type, severity = "INTERNAL_ERROR", "critical"
