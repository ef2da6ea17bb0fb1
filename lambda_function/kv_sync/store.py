"""The sink: DynamoDB reads, and conditional writes that never let an older read win.

Every record carries ``synced_at``, the time its content was read from
Cloudflare, as its version: a write lands only over a record read earlier, so
overlapping syncs can never leave an older value in the table.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    wait_exponential_jitter,
)

from kv_sync import runtime
from kv_sync.errors import ConfigurationError, StorageError, ValueTooLargeError
from kv_sync.model import Record, StoredState

BATCH_GET_MAX = 100
_THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException"}
_RETRYABLE = _THROTTLING | {"RequestLimitExceeded", "InternalServerError", "ServiceUnavailable"}
_VERSION = {"ProjectionExpression": "sk, content_sha256, synced_at, created_at, #ttl"}
serialize = TypeSerializer().serialize
deserialize = TypeDeserializer().deserialize


def read_states(table: str, pk: str, sort_keys: list[str]) -> tuple[dict[str, StoredState], int]:
    """The stored versions of up to 100 records by sort key, and the calls it took.

    One consistent ``BatchGetItem``; keys DynamoDB leaves unprocessed
    (throttling) are asked for again with backoff. Absent records are absent.
    """
    states: dict[str, StoredState] = {}
    request = {"Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for sk in sort_keys], **_VERSION}
    pending: dict[str, Any] = {
        table: {**request, "ConsistentRead": True, "ExpressionAttributeNames": {"#ttl": "ttl"}}
    }
    calls = 0

    def read_pending() -> dict[str, Any]:
        nonlocal pending, calls
        calls += 1
        response = call("batch_get_item", table, RequestItems=pending)
        states.update(_states(response.get("Responses", {}).get(table, [])))
        pending = response.get("UnprocessedKeys") or {}
        return pending

    if sort_keys:
        _ASK_AGAIN(read_pending)
    return states, calls


def query_states(table: str, pk: str, low: str, high: str) -> tuple[dict[str, StoredState], int]:
    """The stored versions of every record with a sort key in ``[low, high]``, and the calls."""
    items, calls = query(
        table,
        KeyConditionExpression="pk = :pk AND sk BETWEEN :low AND :high",
        ExpressionAttributeValues={":pk": {"S": pk}, ":low": {"S": low}, ":high": {"S": high}},
        ExpressionAttributeNames={"#ttl": "ttl"},
        **_VERSION,
    )
    return _states(items), calls


def query(table: str, **parameters: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item of a consistent ``Query``, following its pages; and the calls it took."""
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True, **parameters}
    items: list[dict[str, Any]] = []
    calls = 0
    while True:
        calls += 1
        response = call("query", table, **request)
        items += response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return items, calls
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def write(table: str, record: Record, seen: StoredState | None) -> bool:
    """Store a new or changed record; ``False`` when one from a newer read is stored.

    One ``PutItem`` that replaces the item unless its version is newer. ``created_at``
    is carried over from ``seen``, the version read before (``None``: no record).
    """
    item = {
        "pk": record.pk,
        "sk": record.sk,
        **record.attributes,
        "content_sha256": record.content_sha256,
        "created_at": (seen.created_at if seen else None) or record.synced_at,
        "updated_at": record.synced_at,
    }
    return conditional(
        "put_item",
        TableName=table,
        Item={name: serialize(value) for name, value in item.items()},
        ConditionExpression="attribute_not_exists(pk) OR #synced_at < :synced_at",
        ExpressionAttributeNames={"#synced_at": "synced_at"},
        ExpressionAttributeValues={":synced_at": {"S": record.synced_at}},
    )


def refresh(table: str, record: Record) -> bool:
    """Extend the ``ttl`` of an unchanged record, stamping ``synced_at`` (``False``: lost)."""
    values: dict[str, Any] = {":content": record.content_sha256, ":synced_at": record.synced_at}
    expression = "SET #synced_at = :synced_at REMOVE #ttl"
    if record.ttl is not None:
        expression, values[":ttl"] = "SET #synced_at = :synced_at, #ttl = :ttl", record.ttl
    return conditional(
        "update_item",
        TableName=table,
        Key={"pk": {"S": record.pk}, "sk": {"S": record.sk}},
        UpdateExpression=expression,
        ConditionExpression="#content = :content AND #synced_at < :synced_at",
        ExpressionAttributeNames={
            "#synced_at": "synced_at",
            "#content": "content_sha256",
            "#ttl": "ttl",
        },
        ExpressionAttributeValues={name: serialize(value) for name, value in values.items()},
    )


def delete_if_older(table: str, pk: str, sk: str, seen_missing_at: str) -> bool:
    """Delete the record of a key gone from KV, unless a sync stored it after we looked."""
    return conditional(
        "delete_item",
        TableName=table,
        Key={"pk": {"S": pk}, "sk": {"S": sk}},
        ConditionExpression="attribute_exists(pk) AND #synced_at < :seen",
        ExpressionAttributeNames={"#synced_at": "synced_at"},
        ExpressionAttributeValues={":seen": {"S": seen_missing_at}},
    )


class _ConditionFailed(Exception):
    """A conditional write's condition did not hold: not an error for callers."""


def conditional(operation: str, **kwargs: Any) -> bool:
    """A conditional DynamoDB write; ``False`` when its condition did not hold."""
    try:
        call(operation, kwargs["TableName"], **kwargs)
    except _ConditionFailed:
        return False
    return True


def call(operation: str, table: str, **kwargs: Any) -> Any:
    """One DynamoDB call under the Lambda deadline, its errors typed (``SyncError``)."""
    try:
        return runtime.run_within_deadline(getattr(runtime.client("dynamodb"), operation), **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise _error(table, code, str(exc)) from None
    except BotoCoreError as exc:
        raise StorageError(
            f"Could not reach DynamoDB ({type(exc).__name__}); it may be retried",
            is_retryable=True,
        ) from None


def _error(table: str, code: str, text: str) -> Exception:
    if code == "ConditionalCheckFailedException":
        return _ConditionFailed()
    if code == "ResourceNotFoundException":
        return ConfigurationError(
            f"DynamoDB table '{table}' does not exist; check DYNAMODB_TABLE_NAME"
        )
    if code in {"AccessDeniedException", "UnrecognizedClientException"}:
        return ConfigurationError(f"The function may not use DynamoDB table '{table}' ({code})")
    if code == "ValidationException" and "size" in text.lower():
        return ValueTooLargeError(f"DynamoDB refused the item as too large ({code})")
    throttled = "; throttled even after retries" if code in _THROTTLING else ""
    return StorageError(
        f"DynamoDB call failed ({code or 'unknown error'}){throttled}",
        is_retryable=code in _RETRYABLE,
    )


def _states(items: list[dict[str, Any]]) -> dict[str, StoredState]:
    return {
        item["sk"]["S"]: StoredState(
            content_sha256=item.get("content_sha256", {}).get("S"),
            synced_at=item.get("synced_at", {}).get("S"),
            ttl=int(Decimal(item["ttl"]["N"])) if "ttl" in item else None,
            created_at=item.get("created_at", {}).get("S"),
        )
        for item in items
    }


def _stop_asking(state: RetryCallState) -> bool:
    """After 5 reads, or when the next wait would not fit before the deadline: never
    sleep past it; give up, retryably, while there is time to reply."""
    return state.attempt_number >= 5 or runtime.budget() < (state.upcoming_sleep or 0.0)


def _unprocessed(retry_state: Any) -> Any:
    raise StorageError(
        "DynamoDB kept returning unprocessed keys (throttled) after retries", is_retryable=True
    )


# Asks again, with backoff, while DynamoDB leaves keys unprocessed (one instance: tenacity
# keeps each call's state per thread).
_ASK_AGAIN = Retrying(
    stop=_stop_asking,
    wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
    retry=retry_if_result(bool),
    retry_error_callback=_unprocessed,
)
