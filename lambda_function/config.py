"""Runtime settings, read from the environment the function is deployed with."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_KEY_NAME = "redirect-all-users-to-essentials"
DEFAULT_API_BASE_URL = "https://api.cloudflare.com/client/v4"

# Every environment variable the code reads. Terraform must set each one that has
# no sensible default; tests/terraform/test_env_contract.py keeps the two in step.
ENV_VARS = (
    "DYNAMODB_TABLE_NAME",
    "SECRETS_MANAGER_SECRET_NAME",
    "SECRET_CACHE_SECONDS",
    "CLOUDFLARE_API_BASE_URL",
    "DEFAULT_KEY_NAME",
    "RETRY_MAX_ATTEMPTS",
    "API_TIMEOUT_SECONDS",
    "RECORD_TTL_DAYS",
    "DELETE_MISSING",
    "CLOUDFLARE_REQUESTS_PER_5_MINUTES",
    "SELF_INVOKE_CONTINUATION",
    "MAX_CONTINUATIONS",
)


class SettingsError(ValueError):
    """An environment variable holds a value the function cannot use."""


def _int(name: str, default: int, minimum: int, maximum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _float(name: str, default: float, minimum: float, maximum: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Validated configuration for one invocation."""

    table_name: str
    secret_name: str
    secret_cache_seconds: int
    api_base_url: str
    default_key_name: str
    retry_max_attempts: int
    api_timeout_seconds: float
    record_ttl_days: int
    delete_missing: bool = False
    cloudflare_requests_per_5_minutes: int = 1200
    self_invoke_continuation: bool = False
    max_continuations: int = 50


def load_settings() -> Settings:
    """Read and validate the function's environment.

    Raises
    ------
    SettingsError
        When a variable is missing or out of range; the message names it.
    """
    missing = [
        name
        for name in ("DYNAMODB_TABLE_NAME", "SECRETS_MANAGER_SECRET_NAME")
        if not os.environ.get(name, "").strip()
    ]
    if missing:
        raise SettingsError(f"missing environment variables: {', '.join(missing)}")
    return Settings(
        table_name=os.environ["DYNAMODB_TABLE_NAME"].strip(),
        secret_name=os.environ["SECRETS_MANAGER_SECRET_NAME"].strip(),
        secret_cache_seconds=_int("SECRET_CACHE_SECONDS", 300, 0, 86_400),
        api_base_url=(
            os.environ.get("CLOUDFLARE_API_BASE_URL", "").strip() or DEFAULT_API_BASE_URL
        ).rstrip("/"),
        default_key_name=os.environ.get("DEFAULT_KEY_NAME", "").strip() or DEFAULT_KEY_NAME,
        retry_max_attempts=_int("RETRY_MAX_ATTEMPTS", 3, 1, 10),
        api_timeout_seconds=_float("API_TIMEOUT_SECONDS", 30.0, 1.0, 900.0),
        record_ttl_days=_int("RECORD_TTL_DAYS", 30, 0, 36_500),
        delete_missing=_bool("DELETE_MISSING", False),
        cloudflare_requests_per_5_minutes=_int(
            "CLOUDFLARE_REQUESTS_PER_5_MINUTES", 1200, 1, 100_000
        ),
        self_invoke_continuation=_bool("SELF_INVOKE_CONTINUATION", False),
        max_continuations=_int("MAX_CONTINUATIONS", 50, 0, 1000),
    )
