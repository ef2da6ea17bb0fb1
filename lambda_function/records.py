"""Turning a KV entry into the single-table DynamoDB record."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import Binary

from errors import ValueTooLargeError

if TYPE_CHECKING:
    from cloudflare import KVEntry

# DynamoDB's item limit is 400 KB (names and values); keep a little headroom.
MAX_ITEM_BYTES = 400 * 1024 - 1024
SECONDS_PER_DAY = 86_400


def utc_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with fixed microsecond width, so strings sort like times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def partition_key(namespace_id: str) -> str:
    """The record's ``pk``."""
    return f"NAMESPACE#{namespace_id}"


def sort_key(key_name: str) -> str:
    """The record's ``sk``."""
    return f"KEY#{key_name}"


@dataclass(frozen=True)
class Record:
    """A record ready to write.

    ``attributes`` holds every attribute except ``pk``, ``sk``, ``created_at``
    and ``updated_at``, which the store sets from the write's outcome.
    """

    pk: str
    sk: str
    attributes: dict[str, Any]
    content_sha256: str
    synced_at: str
    value_type: str
    size_bytes: int
    ttl: int | None


def build_record(
    entry: KVEntry,
    *,
    namespace_id: str,
    namespace_name: str,
    synced: datetime,
    ttl_days: int,
) -> Record:
    """Build the DynamoDB record for one KV entry.

    Values that are valid UTF-8 are stored as text exactly as in KV, anything
    else as Binary. When the item would exceed DynamoDB's 400 KB limit the
    value is stored gzip-compressed.

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
    metadata = _to_dynamo(entry.metadata)
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
    if metadata is not None:
        attributes["metadata"] = metadata
    if entry.expiration is not None:
        attributes["expiration"] = entry.expiration
    if ttl is not None:
        attributes["ttl"] = ttl

    pk, sk = partition_key(namespace_id), sort_key(entry.key)
    fixed = {"pk": pk, "sk": sk, "created_at": synced_at, "updated_at": synced_at}
    if item_size({**fixed, **attributes}) > MAX_ITEM_BYTES:
        attributes["value"] = Binary(gzip.compress(raw, compresslevel=9, mtime=0))
        attributes["value_encoding"] = "gzip"
        size = item_size({**fixed, **attributes})
        if size > MAX_ITEM_BYTES:
            raise ValueTooLargeError(
                f"Value of '{entry.key}' is {len(raw):,} bytes and still {size:,} bytes "
                f"gzip-compressed; DynamoDB items are limited to 400 KB"
            )

    return Record(
        pk=pk,
        sk=sk,
        attributes=attributes,
        content_sha256=content_hash(value_sha256, entry.metadata, entry.expiration),
        synced_at=synced_at,
        value_type=value_type,
        size_bytes=len(raw),
        ttl=ttl,
    )


def content_hash(value_sha256: str, metadata: Any, expiration: int | None) -> str:
    """Hash of everything that makes a record "changed": value, metadata, expiry."""
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
    """Whether the text is JSON (strict: NaN and Infinity are not JSON)."""
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
    return int(synced.timestamp()) + ttl_days * SECONDS_PER_DAY


def _to_dynamo(metadata: Any) -> Any:
    """KV metadata as DynamoDB types: numbers as Decimal, nothing else changed."""
    if isinstance(metadata, float):
        return Decimal(repr(metadata))
    if isinstance(metadata, dict):
        return {str(key): _to_dynamo(value) for key, value in metadata.items()}
    if isinstance(metadata, list):
        return [_to_dynamo(value) for value in metadata]
    return metadata
