"""AWS SDK clients, created once per container and reused by warm invocations."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

# Standard retry mode retries throttling and 5xx with backoff; configured once here
# so every call the function makes gets the same policy.
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=3,
    read_timeout=10,
    tcp_keepalive=True,
)


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
