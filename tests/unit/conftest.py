"""Unit-test fixtures: moto's in-process AWS and ``responses`` for Cloudflare."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import responses
from moto import mock_aws

from local import aws_setup

CF_BASE = "https://cf.test/client/v4"
ACCOUNT_ID = "acc0123456789abcdef0123456789abcd"
NAMESPACE_ID = "ns0123456789abcdef0123456789abcd"
NAMESPACE_URL = f"{CF_BASE}/accounts/{ACCOUNT_ID}/storage/kv/namespaces/{NAMESPACE_ID}"
BULK_GET_URL = f"{NAMESPACE_URL}/bulk/get"
TABLE = "cloudflare-kv-data"
SECRET = "cloudflare-kv-credentials"
TOKEN = "cf-token-Zq8v3XkS9aTq"
SECRET_VALUE = {
    "api_token": TOKEN,
    "account_id": ACCOUNT_ID,
    "kv_namespace_id": NAMESPACE_ID,
    "kv_namespace": "flags",
}


@dataclass
class FakeContext:
    """Just enough of LambdaContext for Powertools and the deadline."""

    remaining_ms: int = 30_000
    function_name: str = "cloudflare-data-sync"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:cloudflare-data-sync"
    )
    aws_request_id: str = "11111111-2222-3333-4444-555555555555"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> FakeContext:
    return FakeContext()


@pytest.fixture(autouse=True)
def _function_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The environment Terraform gives the function, pointed at test doubles."""
    import sys

    import aws_clients
    import credentials
    from observability import logger

    # The log handler keeps the stream it was created with; give it this test's.
    logger.registered_handler.stream = sys.stdout  # type: ignore[attr-defined]

    monkeypatch.setenv("DYNAMODB_TABLE_NAME", TABLE)
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", SECRET)
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", CF_BASE)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "3")
    for name in ("DEFAULT_KEY_NAME", "RECORD_TTL_DAYS", "SECRET_CACHE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    aws_clients.reset_clients()
    credentials.reset_cache()
    yield
    aws_clients.reset_clients()
    credentials.reset_cache()


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record tenacity's sleeps instead of sleeping."""
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    return slept


@pytest.fixture
def aws() -> Iterator[Any]:
    """moto with the table and secret Terraform creates, the secret filled in."""
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        # the table as Terraform makes it
        aws_setup.create_table(dynamodb, TABLE, point_in_time_recovery=False)
        secrets = boto3.client("secretsmanager")
        secrets.create_secret(Name=SECRET, SecretString=json.dumps(SECRET_VALUE))
        yield dynamodb


@pytest.fixture
def cf() -> Iterator[responses.RequestsMock]:
    """Cloudflare API double; unexpected calls fail the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def bulk_get_reply(
    key: str, value: str | None, metadata: Any = None, expiration: int | None = None
) -> dict[str, Any]:
    """A bulk-get envelope as Cloudflare returns it with metadata."""
    entry: Any = None
    if value is not None:
        entry = {"value": value, "metadata": metadata}
        if expiration is not None:
            entry["expiration"] = expiration
    return {"success": True, "errors": [], "messages": [], "result": {"values": {key: entry}}}


def failure(code: int, message: str) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


def stored_item(dynamodb: Any, key: str) -> dict[str, Any] | None:
    from boto3.dynamodb.types import TypeDeserializer

    item = dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": f"NAMESPACE#{NAMESPACE_ID}"}, "sk": {"S": f"KEY#{key}"}}
    ).get("Item")
    if item is None:
        return None
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Everything the Powertools logger writes during the test.

    The log handler keeps the stream it was created with, so point it at a
    buffer of our own for the test and put it back afterwards.
    """
    from observability import logger

    handler: Any = logger.registered_handler
    buffer = io.StringIO()
    previous, handler.stream = handler.stream, buffer
    yield buffer
    handler.stream = previous
