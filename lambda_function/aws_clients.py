"""AWS SDK clients, created once per container and reused by warm invocations."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# Standard retry mode retries throttling and 5xx with backoff; configured once here
# so every call the function makes gets the same policy.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = 10
MAX_ATTEMPTS = 5
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    tcp_keepalive=True,
)
# The longest one SDK call can take before botocore itself gives up: every attempt
# timing out, plus standard mode's backoff between them (1 + 2 + 4 + 8 s at most).
WORST_CASE_CALL_S = MAX_ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + 15


@cache
def dynamodb_client() -> Any:
    """The DynamoDB client (created on first use, then reused)."""
    return boto3.client("dynamodb", config=_BOTO_CONFIG)


@cache
def secretsmanager_client() -> Any:
    """The Secrets Manager client (created on first use, then reused)."""
    return boto3.client("secretsmanager", config=_BOTO_CONFIG)


@cache
def lambda_client() -> Any:
    """The Lambda client, used only to continue a long sync asynchronously."""
    return boto3.client("lambda", config=_BOTO_CONFIG)


def reset_clients() -> None:
    """Forget the cached clients, so the next call builds them from the current env."""
    dynamodb_client.cache_clear()
    secretsmanager_client.cache_clear()
    lambda_client.cache_clear()
