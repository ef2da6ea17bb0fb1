"""Error types the function reports.

Every failure an operator can see is one of these. Each has a stable ``type``
string that scripts and alarms key on, says whether a retry may succeed, and
carries a message a person can act on. Messages never contain secret values.
"""

from __future__ import annotations

from typing import ClassVar


class SyncError(Exception):
    """Base class for every failure the function reports.

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
        self,
        message: str,
        *,
        is_retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.is_retryable = self.default_retryable if is_retryable is None else is_retryable
        self.retry_after = retry_after


class ValidationError(SyncError):
    """The event or request is malformed; fix the input."""

    type = "VALIDATION_ERROR"
    http_status = 400
    severity = "warning"


class MethodNotAllowedError(ValidationError):
    """The Function URL was called with an HTTP method other than GET or POST."""

    type = "METHOD_NOT_ALLOWED"
    http_status = 405


class ConfigurationError(SyncError):
    """The deployment is misconfigured: environment, secret or namespace."""

    type = "CONFIGURATION_ERROR"
    http_status = 500
    severity = "critical"


class AuthError(SyncError):
    """Cloudflare rejected the API token, even after re-reading the secret."""

    type = "AUTH_ERROR"
    http_status = 502
    severity = "critical"


class NotFoundError(SyncError):
    """The KV key does not exist."""

    type = "NOT_FOUND"
    http_status = 404
    severity = "warning"


class RateLimitedError(SyncError):
    """Cloudflare kept answering 429 until the retry budget ran out."""

    type = "RATE_LIMITED"
    http_status = 503
    default_retryable = True


class ApiError(SyncError):
    """Cloudflare answered with an error or a response we cannot read."""

    type = "API_ERROR"
    http_status = 502


class DeadlineError(SyncError):
    """Cloudflare was too slow, or the Lambda deadline left no time to retry."""

    type = "TIMEOUT"
    http_status = 504
    default_retryable = True


class NetworkError(SyncError):
    """The connection to Cloudflare failed (refused, reset or cut short)."""

    type = "NETWORK_ERROR"
    http_status = 502
    default_retryable = True


class ValueTooLargeError(SyncError):
    """The value does not fit in a DynamoDB item, even gzip-compressed."""

    type = "VALUE_TOO_LARGE"
    http_status = 422


class StorageError(SyncError):
    """DynamoDB refused or failed the write."""

    type = "STORAGE_ERROR"
    http_status = 500


class InternalError(SyncError):
    """A bug: something failed that the function does not expect."""

    type = "INTERNAL_ERROR"
    http_status = 500
    severity = "critical"
