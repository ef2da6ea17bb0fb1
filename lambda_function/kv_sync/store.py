"""The sink: DynamoDB reads, and conditional writes that never let an older read win.

Every record carries ``synced_at``, the time its content was read from
Cloudflare, as its version: a write lands only over a record read earlier, so
overlapping syncs can never leave an older value in the table.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential_jitter

from kv_sync import runtime
from kv_sync.errors import ConfigurationError, StorageError, ValueTooLargeError
from kv_sync.model import Record, StoredState

# Attributes a record may have or not; a rewrite removes those it does not set,
# so that, say, metadata deleted in KV does not linger in DynamoDB.
OPTIONAL_ATTRIBUTES = ("metadata", "expiration", "ttl", "value_encoding")
BATCH_GET_MAX = 100
_THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException"}
_RETRYABLE = _THROTTLING | {"RequestLimitExceeded", "InternalServerError", "ServiceUnavailable"}
_VERSION = {"ProjectionExpression": "sk, content_sha256, synced_at, #ttl"}
_serialize = TypeSerializer().serialize


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
        response = _call("batch_get_item", table, RequestItems=pending)
        states.update(_states(response.get("Responses", {}).get(table, [])))
        pending = response.get("UnprocessedKeys") or {}
        return pending

    if sort_keys:
        Retrying(
            stop=stop_after_attempt(5),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            retry=retry_if_result(bool),  # keys left unprocessed
            retry_error_callback=_unprocessed,
        )(read_pending)
    return states, calls


def query_states(table: str, pk: str, low: str, high: str) -> tuple[dict[str, StoredState], int]:
    """The stored versions of every record with a sort key in ``[low, high]``, and the calls."""
    states: dict[str, StoredState] = {}
    query: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
        "ExpressionAttributeValues": {":pk": {"S": pk}, ":low": {"S": low}, ":high": {"S": high}},
        "ExpressionAttributeNames": {"#ttl": "ttl"},
        "ConsistentRead": True,
        **_VERSION,
    }
    calls = 0
    while True:
        calls += 1
        response = _call("query", table, **query)
        states.update(_states(response.get("Items", [])))
        if "LastEvaluatedKey" not in response:
            return states, calls
        query["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def write(table: str, record: Record) -> bool:
    """Store a new or changed record; ``False`` when one from a newer read is stored.

    One ``UpdateItem`` sets every attribute, keeps ``created_at`` and removes
    the optional attributes the record no longer has.
    """
    fields = {**record.attributes, "content_sha256": record.content_sha256}
    fields["updated_at"] = fields.pop("synced_at")
    names = {f"#a{i}": name for i, name in enumerate(sorted(fields))}
    values = {f":a{i}": fields[name] for i, name in enumerate(sorted(fields))}
    sets = [f"#a{i} = :a{i}" for i in range(len(fields))]
    sets += ["#synced_at = :synced_at", "#created_at = if_not_exists(#created_at, :synced_at)"]
    names |= {"#synced_at": "synced_at", "#created_at": "created_at"}
    absent = [name for name in OPTIONAL_ATTRIBUTES if name not in fields]
    names |= {f"#r{i}": name for i, name in enumerate(absent)}
    removes = " REMOVE " + ", ".join(f"#r{i}" for i in range(len(absent))) if absent else ""
    return _update(
        table,
        record,
        "SET " + ", ".join(sets) + removes,
        "attribute_not_exists(pk) OR #synced_at < :synced_at",
        names=names,
        values=values,
    )


def refresh(table: str, record: Record) -> bool:
    """Extend the ``ttl`` of an unchanged record, stamping ``synced_at`` (``False``: lost)."""
    names = {"#synced_at": "synced_at", "#content": "content_sha256", "#ttl": "ttl"}
    values: dict[str, Any] = {":content": record.content_sha256}
    expression = "SET #synced_at = :synced_at REMOVE #ttl"
    if record.ttl is not None:
        expression, values[":ttl"] = "SET #synced_at = :synced_at, #ttl = :ttl", record.ttl
    condition = "#content = :content AND #synced_at < :synced_at"
    return _update(table, record, expression, condition, names=names, values=values)


def delete_if_older(table: str, pk: str, sk: str, seen_missing_at: str) -> bool:
    """Delete the record of a key gone from KV, unless a sync stored it after we looked."""
    return _conditional(
        "delete_item",
        TableName=table,
        Key={"pk": {"S": pk}, "sk": {"S": sk}},
        ConditionExpression="attribute_exists(pk) AND #synced_at < :seen",
        ExpressionAttributeNames={"#synced_at": "synced_at"},
        ExpressionAttributeValues={":seen": {"S": seen_missing_at}},
    )


def _update(
    table: str,
    record: Record,
    expression: str,
    condition: str,
    *,
    names: dict[str, str],
    values: dict[str, Any],
) -> bool:
    """One ``UpdateItem`` of ``record``, conditioned on its version; whether it landed."""
    values = {**values, ":synced_at": record.synced_at}
    return _conditional(
        "update_item",
        TableName=table,
        Key={"pk": {"S": record.pk}, "sk": {"S": record.sk}},
        UpdateExpression=expression,
        ConditionExpression=condition,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={name: _serialize(value) for name, value in values.items()},
    )


class _ConditionFailed(Exception):
    """A conditional write's condition did not hold: not an error for callers."""


def _conditional(operation: str, **kwargs: Any) -> bool:
    """A conditional write; ``False`` when its condition did not hold."""
    try:
        _call(operation, kwargs["TableName"], **kwargs)
    except _ConditionFailed:
        return False
    return True


def _call(operation: str, table: str, **kwargs: Any) -> Any:
    """One DynamoDB call under the Lambda deadline, its errors typed."""
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
        )
        for item in items
    }


def _unprocessed(retry_state: Any) -> Any:
    raise StorageError(
        "DynamoDB kept returning unprocessed keys (throttled) after retries", is_retryable=True
    )
