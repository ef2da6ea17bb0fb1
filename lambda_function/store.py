"""Writing records to DynamoDB without ever letting an older sync win."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from aws_clients import dynamodb_client
from deadline import run_within_deadline
from errors import ConfigurationError, StorageError, ValueTooLargeError

if TYPE_CHECKING:
    from records import Record

# Attributes a record may have or not; a write removes those it does not set so
# that, say, metadata deleted in KV does not linger in DynamoDB.
OPTIONAL_ATTRIBUTES = ("metadata", "expiration", "ttl", "value_encoding")
_THROTTLING = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}

_BATCH_ATTEMPTS = 5

_serializer = TypeSerializer()

__all__ = [
    "StoredState",
    "WriteOutcome",
    "delete_if_older",
    "dynamodb_client",
    "query_states",
    "read_states",
    "refresh",
    "write_full",
    "write_record",
]


@dataclass(frozen=True)
class WriteOutcome:
    """What a write did.

    ``changed``: the value, metadata or expiry differed and the record was
    rewritten. ``superseded``: a newer sync had already stored the key, so
    this older result was discarded. ``writes``: DynamoDB calls made.
    """

    changed: bool
    superseded: bool
    writes: int


def write_record(table_name: str, record: Record) -> WriteOutcome:
    """Store a record with at most two conditional ``UpdateItem`` calls.

    The common case, an unchanged value, costs one small update that only
    refreshes ``synced_at`` and ``ttl``. A changed or new value is written in
    full, keeping ``created_at``. Both are refused when the stored record's
    ``synced_at`` is newer than ours, so overlapping invocations can never
    leave an older value in the table.

    Raises
    ------
    StorageError, ConfigurationError, ValueTooLargeError
        DynamoDB refused the write for a reason other than the conditions.
    """
    if _update(table_name, record, full=False):
        return WriteOutcome(changed=False, superseded=False, writes=1)
    if _update(table_name, record, full=True):
        return WriteOutcome(changed=True, superseded=False, writes=2)
    return WriteOutcome(changed=False, superseded=True, writes=2)


def write_full(table_name: str, record: Record, seen: StoredState | None = None) -> bool:
    """Write a new or changed record; ``False`` when a newer sync got there first.

    ``seen`` is what a batched read found (``None``: no record). The write is
    then one ``PutItem`` that holds only if the record is still as read, which
    is cheaper for DynamoDB than an update expression; if another sync wrote
    in between, the ordering-checked ``UpdateItem`` decides.
    """
    if seen is not _UNREAD and _put_if_as_read(table_name, record, seen):
        return True
    return _update(table_name, record, full=True)


def refresh(table_name: str, record: Record) -> bool:
    """Refresh ``synced_at`` and ``ttl`` of an unchanged record (``False``: superseded)."""
    return _update(table_name, record, full=False)


@dataclass(frozen=True)
class StoredState:
    """What change detection needs from a stored record."""

    content_sha256: str | None
    synced_at: str | None
    ttl: int | None
    created_at: str | None = None


# Default of write_full's ``seen``: nothing was read, so no PutItem shortcut.
_UNREAD = StoredState(content_sha256=None, synced_at=None, ttl=None)


@dataclass
class ReadCounter:
    """Counts batched DynamoDB read calls (BatchGetItem, Query pages)."""

    calls: int = 0


_STATE_PROJECTION = "sk, content_sha256, synced_at, created_at, #ttl"


def read_states(
    table_name: str, pk: str, sort_keys: list[str], counter: ReadCounter
) -> dict[str, StoredState]:
    """Stored state of up to 100 records, by sort key, with one BatchGetItem.

    Keys DynamoDB leaves unprocessed (throttling) are asked for again with
    backoff; records that do not exist are simply absent from the result.
    """
    if not sort_keys:
        return {}
    pending: dict[str, Any] = {
        table_name: {
            "Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for sk in sort_keys],
            "ProjectionExpression": _STATE_PROJECTION,
            "ExpressionAttributeNames": {"#ttl": "ttl"},
            "ConsistentRead": True,
        }
    }
    states: dict[str, StoredState] = {}

    def read_pending() -> dict[str, Any]:
        nonlocal pending
        counter.calls += 1
        response = _call("batch_get_item", table_name, RequestItems=pending)
        for item in response.get("Responses", {}).get(table_name, []):
            states[item["sk"]["S"]] = _state(item)
        pending = response.get("UnprocessedKeys") or {}
        return pending

    # Retried while DynamoDB leaves keys unprocessed, i.e. the result is non-empty.
    Retrying(
        stop=stop_after_attempt(_BATCH_ATTEMPTS),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
        retry=retry_if_result(bool),
        retry_error_callback=_unprocessed_error,
    )(read_pending)
    return states


def query_states(
    table_name: str, pk: str, low: str, high: str, counter: ReadCounter
) -> dict[str, StoredState]:
    """Stored state of every record whose sort key is in ``[low, high]``."""
    states: dict[str, StoredState] = {}
    kwargs: dict[str, Any] = {
        "TableName": table_name,
        "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
        "ExpressionAttributeValues": {
            ":pk": {"S": pk},
            ":low": {"S": low},
            ":high": {"S": high},
        },
        "ProjectionExpression": _STATE_PROJECTION,
        "ExpressionAttributeNames": {"#ttl": "ttl"},
        "ConsistentRead": True,
    }
    while True:
        counter.calls += 1
        response = _call("query", table_name, **kwargs)
        for item in response.get("Items", []):
            states[item["sk"]["S"]] = _state(item)
        if "LastEvaluatedKey" not in response:
            return states
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def delete_if_older(table_name: str, pk: str, sk: str, seen_missing_at: str) -> bool:
    """Delete a record whose key is gone, unless a sync stored it after we looked.

    Returns ``False`` when the record was (re)written after ``seen_missing_at``
    (or is already gone), so a key re-created meanwhile is never lost.
    """
    return _conditional(
        "delete_item",
        TableName=table_name,
        Key={"pk": {"S": pk}, "sk": {"S": sk}},
        ConditionExpression="attribute_exists(pk) AND #synced_at < :seen",
        ExpressionAttributeNames={"#synced_at": "synced_at"},
        ExpressionAttributeValues={":seen": {"S": seen_missing_at}},
    )


def _call(operation: str, table_name: str, **kwargs: Any) -> Any:
    """One DynamoDB call under the Lambda deadline, its errors typed (for ``table_name``)."""
    try:
        return run_within_deadline(getattr(dynamodb_client(), operation), **kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise _storage_error(table_name, code, str(exc)) from None
    except BotoCoreError as exc:
        raise StorageError(
            f"Could not reach DynamoDB ({type(exc).__name__}); it may be retried",
            is_retryable=True,
        ) from None


def _conditional(operation: str, **kwargs: Any) -> bool:
    """A conditional write; ``False`` when its condition did not hold."""
    try:
        _call(operation, kwargs["TableName"], **kwargs)
    except _ConditionFailed:
        return False
    return True


class _ConditionFailed(Exception):
    """A conditional write's condition did not hold (not an error for callers)."""


def _state(item: dict[str, Any]) -> StoredState:
    ttl = item.get("ttl", {}).get("N")
    return StoredState(
        content_sha256=item.get("content_sha256", {}).get("S"),
        synced_at=item.get("synced_at", {}).get("S"),
        ttl=int(Decimal(ttl)) if ttl is not None else None,
        created_at=item.get("created_at", {}).get("S"),
    )


def _put_if_as_read(table_name: str, record: Record, seen: StoredState | None) -> bool:
    """Replace the record if nobody wrote it since it was read as ``seen``."""
    item = {
        "pk": record.pk,
        "sk": record.sk,
        **record.attributes,
        "content_sha256": record.content_sha256,
        "created_at": (seen.created_at if seen else None) or record.synced_at,
        "updated_at": record.synced_at,
    }
    if seen is None:
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
    elif seen.synced_at is not None:
        condition = {
            "ConditionExpression": "#synced_at = :seen",
            "ExpressionAttributeNames": {"#synced_at": "synced_at"},
            "ExpressionAttributeValues": {":seen": {"S": seen.synced_at}},
        }
    else:
        return False
    return _conditional(
        "put_item",
        TableName=table_name,
        Item={name: _serializer.serialize(value) for name, value in item.items()},
        **condition,
    )


def _unprocessed_error(retry_state: RetryCallState) -> Any:
    raise StorageError(
        "DynamoDB kept returning unprocessed keys (throttled) after retries", is_retryable=True
    )


def _update(table_name: str, record: Record, *, full: bool) -> bool:
    """One conditional update; ``False`` when its condition did not hold."""
    names: dict[str, str] = {"#synced_at": "synced_at"}
    values: dict[str, Any] = {":synced_at": record.synced_at, ":content": record.content_sha256}
    sets = ["#synced_at = :synced_at"]
    removes: list[str] = []

    if full:
        fields = dict(record.attributes)
        fields["content_sha256"] = record.content_sha256
        fields["updated_at"] = record.synced_at
        for index, (name, value) in enumerate(sorted(fields.items())):
            if name == "synced_at":
                continue
            names[f"#a{index}"] = name
            values[f":v{index}"] = value
            sets.append(f"#a{index} = :v{index}")
        names["#created_at"] = "created_at"
        sets.append("#created_at = if_not_exists(#created_at, :synced_at)")
        for index, name in enumerate(OPTIONAL_ATTRIBUTES):
            if name not in fields:
                names[f"#r{index}"] = name
                removes.append(f"#r{index}")
        condition = "attribute_not_exists(pk) OR #synced_at < :synced_at"
        values.pop(":content")
    else:
        names["#content"] = "content_sha256"
        names["#ttl"] = "ttl"
        if record.ttl is None:
            removes.append("#ttl")
        else:
            values[":ttl"] = record.ttl
            sets.append("#ttl = :ttl")
        condition = "#content = :content AND #synced_at < :synced_at"

    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    return _conditional(
        "update_item",
        TableName=table_name,
        Key={"pk": {"S": record.pk}, "sk": {"S": record.sk}},
        UpdateExpression=expression,
        ConditionExpression=condition,
        ExpressionAttributeNames=names,
        ExpressionAttributeValues={k: _serializer.serialize(v) for k, v in values.items()},
    )


def _storage_error(table_name: str, code: str, text: str) -> Exception:
    if code == "ConditionalCheckFailedException":
        return _ConditionFailed()
    if code == "ResourceNotFoundException":
        return ConfigurationError(
            f"DynamoDB table '{table_name}' does not exist; check DYNAMODB_TABLE_NAME"
        )
    if code in {"AccessDeniedException", "UnrecognizedClientException"}:
        return ConfigurationError(
            f"The function may not write to DynamoDB table '{table_name}' ({code})"
        )
    if code == "ValidationException" and "size" in text.lower():
        return ValueTooLargeError(f"DynamoDB refused the item as too large ({code})")
    retryable = code in _THROTTLING or code in {"InternalServerError", "ServiceUnavailable"}
    return StorageError(
        f"DynamoDB write failed ({code or 'unknown error'})"
        + ("; throttled even after retries" if code in _THROTTLING else ""),
        is_retryable=retryable,
    )
