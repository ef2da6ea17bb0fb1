"""The Cloudflare credentials: a Secrets Manager secret read through Powertools Parameters.

The provider caches the secret for ``SECRET_CACHE_SECONDS`` across warm
invocations. ``use_provider`` swaps in another Powertools provider (the local
runner reads ``CLOUDFLARE_*`` environment variables through one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import BotoCoreError

from kv_sync import redaction, runtime, tracing
from kv_sync.errors import ConfigurationError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters.base import BaseProvider

    from kv_sync.settings import Settings

REQUIRED_FIELDS = ("api_token", "account_id", "kv_namespace_id", "kv_namespace")
# Values people leave in a secret before filling it in. kv_namespace is a free-form
# title ("todo" is a fine name), so only unmistakable template markers count there.
_TEMPLATE = r"<.*>|\$\{.*\}|changeme|change[-_ ]me|replace[-_ ]?me.*"
_PLACEHOLDER = re.compile(
    rf"^({_TEMPLATE}|x+|placeholder.*|todo|tbd|your[-_ ].*|dummy|none|null)$", re.IGNORECASE
)
_TEMPLATE_ONLY = re.compile(rf"^({_TEMPLATE})$", re.IGNORECASE)
_HINTS = {
    "ResourceNotFoundException": "the secret does not exist or has no value yet; put one "
    "with 'aws secretsmanager put-secret-value'",
    "AccessDeniedException": "the function's role may not read it (or decrypt its key)",
    "DecryptionFailure": "its KMS key cannot be used by the function's role",
}
_provider: BaseProvider | None = None


class _SecretsManager(SecretsProvider):
    """Powertools' Secrets Manager provider, traced as ``## secrets.read`` when it reads
    Secrets Manager (a cached secret costs no subsegment)."""

    def _get(self, name: str, **sdk_options: Any) -> str | bytes:
        with tracing.subsegment("secrets.read"):
            return super()._get(name, **sdk_options)


@dataclass(frozen=True)
class CloudflareCredentials:
    """What the function needs to call the Cloudflare KV API."""

    api_token: str
    account_id: str
    namespace_id: str
    namespace_name: str

    def __repr__(self) -> str:  # never let the token reach a log line
        return (
            f"CloudflareCredentials(account_id={self.account_id!r}, "
            f"namespace_id={self.namespace_id!r}, api_token='***')"
        )


def use_provider(provider: BaseProvider | None) -> None:
    """Read credentials through ``provider`` from now on; ``None``: Secrets Manager again.

    Also drops the cached secret, so that the next read fetches it.
    """
    global _provider  # noqa: PLW0603 - the container's provider, and its cache
    _provider = provider


def load_credentials(settings: Settings, *, force_fetch: bool = False) -> CloudflareCredentials:
    """Read the credentials secret (cached); ``force_fetch`` bypasses the cache.

    Raises
    ------
    ConfigurationError
        The secret cannot be read, has no value, is not JSON, or lacks fields.
    """
    global _provider  # noqa: PLW0603 - created on first use, reused by warm invocations
    if _provider is None:
        _provider = _SecretsManager(boto3_client=runtime.client("secretsmanager"))
    try:
        raw = runtime.run_within_deadline(
            _provider.get,
            settings.secret_name,
            max_age=settings.secret_cache_seconds,
            force_fetch=force_fetch,
        )
    except GetParameterError as exc:
        cause = exc.__cause__ or exc.__context__
        code = _error_code(cause)
        unreachable = isinstance(cause, BotoCoreError)
        hint = _HINTS.get(code, "check that it exists and the function may read it")
        if unreachable:
            hint = "Secrets Manager could not be reached; the call may be retried"
        raise ConfigurationError(
            f"Cannot read secret '{settings.secret_name}' ({code}): {hint}",
            is_retryable=unreachable or code in {"InternalServiceError", "ThrottlingException"},
        ) from None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return _parsed(text if isinstance(text, str) else None, settings.secret_name)


@lru_cache(maxsize=4)
def _parsed(text: str | None, secret_name: str) -> CloudflareCredentials:
    """The credentials in a secret's text, its values registered for redaction (cached:
    a warm container reads the same text each time)."""
    if text is not None:
        redaction.register(text)
    creds = parse_credentials(text, secret_name)
    redaction.register(creds.api_token)
    return creds


def parse_credentials(raw: str | None, secret_name: str) -> CloudflareCredentials:
    """Validate a secret's JSON; error messages name fields, never values."""
    if raw is None or not raw.strip():
        raise ConfigurationError(f"Secret '{secret_name}' is empty; put the credentials JSON")
    fields = ", ".join(REQUIRED_FIELDS)
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigurationError(
            f"Secret '{secret_name}' is not valid JSON; expected an object with fields {fields}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"Secret '{secret_name}' must be a JSON object with {fields}")
    missing = [
        f for f in REQUIRED_FIELDS if not isinstance(data.get(f), str) or not data[f].strip()
    ]
    if missing:
        raise ConfigurationError(
            f"Secret '{secret_name}' is missing or has empty fields: {', '.join(missing)}"
        )
    values = {name: data[name].strip() for name in REQUIRED_FIELDS}
    if re.search(r"[\s\x00-\x1f\x7f]", values["api_token"]):
        # A token pasted with a line break would make an invalid header, every time.
        raise ConfigurationError(
            f"Secret '{secret_name}' has whitespace or control characters inside api_token"
        )
    placeholders = [
        name
        for name, value in values.items()
        if (_TEMPLATE_ONLY if name == "kv_namespace" else _PLACEHOLDER).match(value)
    ]
    if placeholders:
        raise ConfigurationError(
            f"Secret '{secret_name}' still holds placeholder values in: {', '.join(placeholders)}"
        )
    return CloudflareCredentials(
        api_token=values["api_token"],
        account_id=values["account_id"],
        namespace_id=values["kv_namespace_id"],
        namespace_name=values["kv_namespace"],
    )


def _error_code(cause: BaseException | None) -> str:
    """The AWS error code behind a Powertools ``GetParameterError``, if any."""
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str):
            return code
    return type(cause).__name__ if cause is not None else "Unknown"
