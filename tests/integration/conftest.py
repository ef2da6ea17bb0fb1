"""Integration fixtures: the real handler against moto server and the KV emulator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from local import aws_setup

TOKEN = "integration-token-8f3k2m"


@dataclass
class LambdaLikeContext:
    """A context whose remaining time counts down like Lambda's."""

    timeout_ms: int = 30_000
    function_name: str = "cloudflare-data-sync"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:cloudflare-data-sync"
    )
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        import time

        self._ends = time.monotonic() + self.timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        import time

        return max(int((self._ends - time.monotonic()) * 1000), 0)


@dataclass
class Stack:
    """One deployed-like stack: table, secret and KV namespace, plus the handler."""

    emulator: Any
    namespace_id: str
    table: str
    secret: str
    dynamodb: Any
    secrets: Any

    def invoke(self, event: Any = None, timeout_ms: int = 30_000) -> Any:
        import handler

        return handler.lambda_handler({} if event is None else event, LambdaLikeContext(timeout_ms))

    def item(self, key: str) -> dict[str, Any] | None:
        from boto3.dynamodb.types import TypeDeserializer

        raw = self.dynamodb.get_item(
            TableName=self.table,
            Key={"pk": {"S": f"NAMESPACE#{self.namespace_id}"}, "sk": {"S": f"KEY#{key}"}},
            ConsistentRead=True,
        ).get("Item")
        if raw is None:
            return None
        deserializer = TypeDeserializer()
        return {name: deserializer.deserialize(value) for name, value in raw.items()}

    def put_secret(self, token: str) -> None:
        self.secrets.put_secret_value(
            SecretId=self.secret,
            SecretString=json.dumps(
                {
                    "api_token": token,
                    "account_id": self.emulator.account_id,
                    "kv_namespace_id": self.namespace_id,
                    "kv_namespace": "kv-sync-test",
                }
            ),
        )


@pytest.fixture
def stack(
    moto_server_url: str, kv_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    """A fresh table and secret in moto server, a namespace in the emulator."""
    import aws_clients
    import credentials

    suffix = uuid.uuid4().hex[:8]
    table, secret = f"kv-{suffix}", f"cf-{suffix}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_url)
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", table)
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", secret)
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", kv_emulator.base_url)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "3")
    aws_clients.reset_clients()
    credentials.reset_cache()

    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server_url)
    # the table as Terraform makes it
    aws_setup.create_table(dynamodb, table, point_in_time_recovery=False)
    secrets = boto3.client("secretsmanager", endpoint_url=moto_server_url)
    secrets.create_secret(Name=secret)
    kv_emulator.set_tokens([TOKEN])
    built = Stack(kv_emulator, kv_emulator.test_namespace_id, table, secret, dynamodb, secrets)
    built.put_secret(TOKEN)
    yield built
    dynamodb.delete_table(TableName=table)
    secrets.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    aws_clients.reset_clients()
    credentials.reset_cache()
