"""Cloudflare credentials, read from Secrets Manager and cached across invocations."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import BotoCoreError

import aws_clients
import redaction
from deadline import run_within_deadline
from errors import ConfigurationError

if TYPE_CHECKING:
    from config import Settings

REQUIRED_FIELDS = ("api_token", "account_id", "kv_namespace_id", "kv_namespace")

# Values people leave in a secret before filling it in.
_PLACEHOLDER = re.compile(
    r"^(<.*>|\$\{.*\}|x+|changeme|change[-_ ]me|replace[-_ ]?me.*|placeholder.*|todo|tbd|"
    r"your[-_ ].*|dummy|none|null)$",
    re.IGNORECASE,
)


_TEMPLATE = re.compile(r"^(<.*>|\$\{.*\}|changeme|change[-_ ]me|replace[-_ ]?me.*)$", re.IGNORECASE)


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


@cache
def _provider() -> SecretsProvider:
    return SecretsProvider(boto3_client=aws_clients.secretsmanager_client())


def reset_cache() -> None:
    """Drop the provider and its cached secret (tests and client resets)."""
    _provider.cache_clear()


def load_credentials(settings: Settings, *, force_fetch: bool = False) -> CloudflareCredentials:
    """Read the Cloudflare credentials secret.

    Parameters
    ----------
    settings
        Names the secret and how long to cache it.
    force_fetch
        Bypass the cache; used once after Cloudflare rejects the token, so a
        rotated token is picked up without waiting for the cache to expire.

    Raises
    ------
    ConfigurationError
        The secret is missing, has no value, is not JSON, or lacks fields.
    """
    try:
        raw = run_within_deadline(
            _provider().get,
            settings.secret_name,
            max_age=settings.secret_cache_seconds,
            force_fetch=force_fetch,
        )
    except GetParameterError as exc:
        code = _client_error_code(exc)
        hint = {
            "ResourceNotFoundException": (
                "the secret does not exist or has no value yet; put one with "
                "'aws secretsmanager put-secret-value'"
            ),
            "AccessDeniedException": "the function's role may not read it (or decrypt its key)",
            "DecryptionFailure": "its KMS key cannot be used by the function's role",
        }.get(code, "check that it exists and the function may read it")
        unreachable = isinstance(exc.__cause__ or exc.__context__, BotoCoreError)
        if unreachable:
            hint = "Secrets Manager could not be reached; the call may be retried"
        raise ConfigurationError(
            f"Cannot read secret '{settings.secret_name}' ({code}): {hint}",
            is_retryable=unreachable or code in {"InternalServiceError", "ThrottlingException"},
        ) from None
    if isinstance(raw, bytes | str):
        redaction.register(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
    creds = parse_credentials(raw if isinstance(raw, str | bytes) else None, settings.secret_name)
    redaction.register(creds.api_token)
    return creds


def parse_credentials(raw: str | bytes | None, secret_name: str) -> CloudflareCredentials:
    """Validate a secret's JSON; error messages name fields, never values."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if raw is None or not raw.strip():
        raise ConfigurationError(f"Secret '{secret_name}' is empty; put the credentials JSON")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ConfigurationError(
            f"Secret '{secret_name}' is not valid JSON; expected an object with fields "
            f"{', '.join(REQUIRED_FIELDS)}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"Secret '{secret_name}' must be a JSON object with fields {', '.join(REQUIRED_FIELDS)}"
        )
    missing = [
        field
        for field in REQUIRED_FIELDS
        if not isinstance(data.get(field), str) or not data[field].strip()
    ]
    if missing:
        raise ConfigurationError(
            f"Secret '{secret_name}' is missing or has empty fields: {', '.join(missing)}"
        )
    if re.search(r"[\s\x00-\x1f\x7f]", data["api_token"].strip()):
        # A token pasted with a line break would make an invalid header, every time.
        raise ConfigurationError(
            f"Secret '{secret_name}' has whitespace or control characters inside api_token"
        )
    # kv_namespace is a free-form title ("todo" is a fine name): only unmistakable
    # template markers count as placeholders there.
    placeholders = [
        field
        for field in REQUIRED_FIELDS
        if (_TEMPLATE if field == "kv_namespace" else _PLACEHOLDER).match(data[field].strip())
    ]
    if placeholders:
        raise ConfigurationError(
            f"Secret '{secret_name}' still holds placeholder values in: {', '.join(placeholders)}"
        )
    return CloudflareCredentials(
        api_token=data["api_token"].strip(),
        account_id=data["account_id"].strip(),
        namespace_id=data["kv_namespace_id"].strip(),
        namespace_name=data["kv_namespace"].strip(),
    )


def _client_error_code(exc: BaseException) -> str:
    """The AWS error code behind a Powertools GetParameterError, if any."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str):
            return code
    return type(cause).__name__ if cause is not None else "Unknown"
