"""Settings, read and validated from the environment the function is deployed with."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from kv_sync.errors import ConfigurationError

DEFAULT_KEY_NAME = "redirect-all-users-to-essentials"
DEFAULT_API_BASE_URL = "https://api.cloudflare.com/client/v4"
# Numeric variables: (setting, default, minimum, maximum); whole numbers unless a float default.
_NUMBERS = {
    "SECRET_CACHE_SECONDS": ("secret_cache_seconds", 300, 0, 86_400),
    "RETRY_MAX_ATTEMPTS": ("retry_max_attempts", 3, 1, 10),
    "API_TIMEOUT_SECONDS": ("api_timeout_seconds", 30.0, 1, 900),
    "RECORD_TTL_DAYS": ("record_ttl_days", 30, 0, 36_500),
    "CLOUDFLARE_REQUESTS_PER_5_MINUTES": ("cloudflare_requests_per_5_minutes", 1200, 1, 100_000),
    "MAX_DELETE_PERCENT": ("max_delete_percent", 25, 0, 100),
}
_FLAGS = {"DELETE_MISSING": "delete_missing"}
_REQUIRED = ("DYNAMODB_TABLE_NAME", "SECRETS_MANAGER_SECRET_NAME")
# Every variable the code reads; tests/terraform/test_env_contract.py holds Terraform to it.
ENV_VARS = (*_REQUIRED, "CLOUDFLARE_API_BASE_URL", "DEFAULT_KEY_NAME", *_NUMBERS, *_FLAGS)


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one invocation."""

    table_name: str
    secret_name: str
    secret_cache_seconds: int = 300
    api_base_url: str = DEFAULT_API_BASE_URL
    default_key_name: str = DEFAULT_KEY_NAME
    retry_max_attempts: int = 3
    api_timeout_seconds: float = 30.0
    record_ttl_days: int = 30
    delete_missing: bool = False
    cloudflare_requests_per_5_minutes: int = 1200
    max_delete_percent: int = 25


def load_settings() -> Settings:
    """Read and validate the function's environment.

    Raises
    ------
    ConfigurationError
        A variable is missing or out of range; the message names it.
    """
    return _parse(tuple(os.environ.get(name, "").strip() for name in ENV_VARS))


@lru_cache(maxsize=4)
def _parse(raw: tuple[str, ...]) -> Settings:
    """Settings from the variables' values (cached: a container's environment is fixed)."""
    env = dict(zip(ENV_VARS, raw, strict=True))
    missing = [name for name in _REQUIRED if not env[name]]
    if missing:
        raise ConfigurationError(f"Missing environment variables: {', '.join(missing)}")
    values: dict[str, object] = {
        setting: _flag(name, env[name]) for name, setting in _FLAGS.items()
    }
    for name, (setting, default, low, high) in _NUMBERS.items():
        values[setting] = _number(name, env[name], default, low, high)
    return Settings(
        table_name=env["DYNAMODB_TABLE_NAME"],
        secret_name=env["SECRETS_MANAGER_SECRET_NAME"],
        api_base_url=(env["CLOUDFLARE_API_BASE_URL"] or DEFAULT_API_BASE_URL).rstrip("/"),
        default_key_name=env["DEFAULT_KEY_NAME"] or DEFAULT_KEY_NAME,
        **values,  # type: ignore[arg-type]
    )


def _number(name: str, raw: str, default: float, low: float, high: float) -> float:
    if not raw:
        return default
    kind = float if isinstance(default, float) else int
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name} must be {'a number' if kind is float else 'an integer'}, got {raw[:40]!r}"
        ) from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _flag(name: str, raw: str) -> bool:
    if raw.lower() in {"", "0", "false", "no", "off"}:
        return False
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    raise ConfigurationError(f"{name} must be true or false, got {raw[:40]!r}")
