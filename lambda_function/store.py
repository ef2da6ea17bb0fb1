"""Writing records to DynamoDB without ever letting an older sync win."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from aws_clients import dynamodb_client
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

_serializer = TypeSerializer()

__all__ = ["WriteOutcome", "dynamodb_client", "write_record"]


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
    try:
        dynamodb_client().update_item(
            TableName=table_name,
            Key={"pk": {"S": record.pk}, "sk": {"S": record.sk}},
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={k: _serializer.serialize(v) for k, v in values.items()},
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ConditionalCheckFailedException":
            return False
        raise _storage_error(table_name, code, str(exc)) from None
    except BotoCoreError as exc:
        raise StorageError(
            f"Could not reach DynamoDB ({type(exc).__name__}); it will be retried",
            is_retryable=True,
        ) from None
    return True


def _storage_error(table_name: str, code: str, text: str) -> Exception:
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
