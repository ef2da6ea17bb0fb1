"""The transform: a KV entry becomes its single-table DynamoDB record."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import Binary

from kv_sync.errors import ValueTooLargeError
from kv_sync.model import Record, utc_timestamp

if TYPE_CHECKING:
    from kv_sync.model import KVEntry

# DynamoDB's item limit is 400 KB (names and values); keep a little headroom.
MAX_ITEM_BYTES = 400 * 1024 - 1024
SECONDS_PER_DAY = 86_400
KEY_PREFIX = "KEY#"


def partition_key(namespace_id: str) -> str:
    """The ``pk`` of a namespace's records."""
    return f"NAMESPACE#{namespace_id}"


def sort_key(key_name: str) -> str:
    """The ``sk`` of a key's record."""
    return f"{KEY_PREFIX}{key_name}"


def build_record(
    entry: KVEntry, *, namespace_id: str, namespace_name: str, synced: datetime, ttl_days: int
) -> Record:
    """The record of one KV entry, read at ``synced``.

    Text that is valid UTF-8 is stored exactly as in KV, anything else as
    Binary; an item over DynamoDB's 400 KB limit stores the value gzip-compressed.

    Raises
    ------
    ValueTooLargeError
        The item does not fit even compressed.
    """
    raw = entry.value
    value: str | Binary
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        value, value_type = Binary(raw), "binary"
    else:
        value, value_type = text, "json" if _is_json(text) else "string"
    value_sha256 = hashlib.sha256(raw).hexdigest()
    synced_at = utc_timestamp(synced)
    ttl = _ttl(entry.expiration, synced, ttl_days)
    attributes: dict[str, Any] = {
        "key": entry.key,
        "value": value,
        "value_type": value_type,
        "namespace_id": namespace_id,
        "namespace_name": namespace_name,
        "value_sha256": value_sha256,
        "size_bytes": len(raw),
        "synced_at": synced_at,
    }
    if entry.metadata is not None:
        attributes["metadata"] = _to_dynamo(entry.metadata)
    if entry.expiration is not None:
        attributes["expiration"] = entry.expiration
    if ttl is not None:
        attributes["ttl"] = ttl

    pk, sk = partition_key(namespace_id), sort_key(entry.key)
    fixed = {"pk": pk, "sk": sk, "created_at": synced_at, "updated_at": synced_at}
    content = content_hash(value_sha256, entry.metadata, entry.expiration)
    fixed["content_sha256"] = content
    if item_size({**fixed, **attributes}) > MAX_ITEM_BYTES:
        attributes["value"] = Binary(gzip.compress(raw, compresslevel=9, mtime=0))
        attributes["value_encoding"] = "gzip"
        size = item_size({**fixed, **attributes})
        if size > MAX_ITEM_BYTES:
            raise ValueTooLargeError(
                f"Value of '{entry.key}' is {len(raw):,} bytes and still {size:,} bytes "
                "gzip-compressed; DynamoDB items are limited to 400 KB"
            )
    return Record(
        pk=pk,
        sk=sk,
        attributes=attributes,
        content_sha256=content,
        synced_at=synced_at,
        value_type=value_type,
        size_bytes=len(raw),
        ttl=ttl,
    )


def content_hash(value_sha256: str, metadata: Any, expiration: int | None) -> str:
    """Hash of everything that makes a record "changed": value, metadata, expiration."""
    canonical = json.dumps(
        [value_sha256, metadata, expiration], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item: attribute names plus their values."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def _value_size(value: Any) -> int:  # noqa: PLR0911 - one return per DynamoDB type
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, Binary):
        return len(value.value)
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | Decimal):
        # Numbers take about one byte per two significant digits, plus one.
        return len(str(value).lstrip("-").replace(".", "")) // 2 + 2
    if isinstance(value, dict):
        return 3 + sum(len(str(k).encode("utf-8")) + _value_size(v) + 1 for k, v in value.items())
    if isinstance(value, list):
        return 3 + sum(_value_size(v) + 1 for v in value)
    return len(str(value).encode("utf-8"))


def _is_json(text: str) -> bool:
    """Whether the text is JSON (strictly: NaN and Infinity are not)."""
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _ttl(expiration: int | None, synced: datetime, ttl_days: int) -> int | None:
    if expiration is not None:
        return expiration
    if ttl_days == 0:
        return None
    return int(synced.astimezone(UTC).timestamp()) + ttl_days * SECONDS_PER_DAY


def _to_dynamo(metadata: Any) -> Any:
    """KV metadata as DynamoDB types: numbers as Decimal, nothing else changed."""
    if isinstance(metadata, float):
        return Decimal(repr(metadata))
    if isinstance(metadata, dict):
        return {str(key): _to_dynamo(value) for key, value in metadata.items()}
    if isinstance(metadata, list):
        return [_to_dynamo(value) for value in metadata]
    return metadata
