"""A deployed-like stack over real sockets: moto server, the KV emulator and the real handler.

``deployed`` creates a table and a secret in moto server the way Terraform does, puts
the credentials of an emulator namespace, and points the function's environment at
them. ``Stack`` then invokes ``kv_sync.handler.lambda_handler`` in this process with a
``LambdaContext`` that counts down like Lambda's, and reads back what the function
stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer

from local import aws_setup
from local.lambda_context import LambdaContext
from tests.support.function import reset_function_state

if TYPE_CHECKING:
    import pytest

    from local.kv_emulator import KVEmulator

TOKEN = "integration-token-8f3k2m"
NAMESPACE_TITLE = "kv-sync-test"


@dataclass
class Stack:
    """A table, a secret and a KV namespace, and the handler that syncs between them."""

    emulator: KVEmulator
    namespace_id: str
    table: str
    secret: str
    moto_url: str
    dynamodb: Any
    secrets: Any

    def env(self) -> dict[str, str]:
        """The function's environment for this stack, as Terraform would set it."""
        return {
            "AWS_ENDPOINT_URL": self.moto_url,
            "DYNAMODB_TABLE_NAME": self.table,
            "SECRETS_MANAGER_SECRET_NAME": self.secret,
            "CLOUDFLARE_API_BASE_URL": self.emulator.base_url,
            "RETRY_MAX_ATTEMPTS": "3",
        }

    def invoke(self, event: Any = None, timeout_ms: int = 30_000) -> Any:
        """Run the real handler in this process, as a warm container would."""
        from kv_sync.handler import lambda_handler

        return lambda_handler({} if event is None else event, LambdaContext(timeout_ms=timeout_ms))

    def item(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key`` (consistent read), or ``None``."""
        raw = self.dynamodb.get_item(
            TableName=self.table,
            Key={"pk": {"S": f"NAMESPACE#{self.namespace_id}"}, "sk": {"S": f"KEY#{key}"}},
            ConsistentRead=True,
        ).get("Item")
        return None if raw is None else _plain(raw)

    def items(self) -> dict[str, dict[str, Any]]:
        """Every record of the namespace, by key name (not the run's own items)."""
        return {item["key"]: item for item in self._partition("KEY#")}

    def run_items(self) -> dict[str, dict[str, Any]]:
        """The run's own items beside the records, by sort key: ``#LEASE``, pending
        deletions (``#RUN#<run id>#DELETE#<part>``), sync states (``#SYNC#...``)."""
        return {item["sk"]: item for item in self._partition("#")}

    def lease(self) -> dict[str, Any] | None:
        """The namespace's lease item (a multi-key run holds it), or ``None``."""
        return self.run_items().get("#LEASE")

    def _partition(self, sort_key_start: str) -> list[dict[str, Any]]:
        """The namespace's items whose sort key starts with ``sort_key_start``."""
        found: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :start)",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"NAMESPACE#{self.namespace_id}"},
                ":start": {"S": sort_key_start},
            },
            "ConsistentRead": True,
        }
        while True:
            page = self.dynamodb.query(**kwargs)
            found += [_plain(raw) for raw in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def values(self) -> dict[str, bytes]:
        """Every stored value, as bytes, by key name (what KV holds, if in sync)."""
        return {
            key: item["value"].encode() if isinstance(item["value"], str) else item["value"].value
            for key, item in self.items().items()
        }

    def put_secret(self, token: str) -> None:
        """Put the namespace's credentials with ``token``, as an operator does."""
        aws_setup.put_credentials(
            self.secrets,
            {
                "api_token": token,
                "account_id": self.emulator.account_id,
                "kv_namespace_id": self.namespace_id,
                "kv_namespace": NAMESPACE_TITLE,
            },
            self.secret,
        )

    def put_raw_secret(self, raw: str) -> None:
        """Put any secret string, valid or not."""
        self.secrets.put_secret_value(SecretId=self.secret, SecretString=raw)

    def secret_string(self) -> str:
        """The secret's current value."""
        value: str = self.secrets.get_secret_value(SecretId=self.secret)["SecretString"]
        return value


def fresh_container() -> None:
    """The function's per-container state as a new container has it.

    No cached clients or secret, and a fresh window of the client-side Cloudflare
    rate limit (a changed limit starts one), so that the requests of earlier tests in
    this process do not count against later ones.
    """
    from kv_sync import ratelimit

    reset_function_state()
    ratelimit.shared_limiter(1)


@contextmanager
def deployed(
    moto_url: str, emulator: KVEmulator, monkeypatch: pytest.MonkeyPatch, *, prefix: str = "kv"
) -> Iterator[Stack]:
    """A fresh table and secret in moto server for the emulator's test namespace.

    The process's environment points the function at them (undone by ``monkeypatch``);
    the function starts as in a new container (``fresh_container``).
    """
    suffix = uuid.uuid4().hex[:8]
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_url)
    secrets = boto3.client("secretsmanager", endpoint_url=moto_url)
    table, secret = f"{prefix}-{suffix}", f"{prefix}-cf-{suffix}"
    aws_setup.create_table(dynamodb, table, point_in_time_recovery=False)
    aws_setup.create_secret(secrets, secret)
    namespace_id: str = emulator.test_namespace_id  # type: ignore[attr-defined]
    stack = Stack(emulator, namespace_id, table, secret, moto_url, dynamodb, secrets)
    emulator.set_tokens([TOKEN])
    stack.put_secret(TOKEN)
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)
    fresh_container()
    try:
        yield stack
    finally:
        reset_function_state()
        dynamodb.delete_table(TableName=table)
        secrets.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)


def _plain(raw: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in raw.items()}
