"""DynamoDB items (as the low-level client returns them) to ``Entry`` and ``Freshness``.

The record format is kv-sync's (README, "Record schema"): ``value`` is the text
exactly as in KV (S), or Binary (B) when the value is not UTF-8 or when it is
gzip-compressed (``value_encoding`` ``gzip``); ``value_type`` tells text from bytes.
"""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer

from kv_sync_reader.errors import NotJSONError, RecordFormatError
from kv_sync_reader.model import Entry, Freshness

VALUE_TYPES = frozenset({"string", "json", "binary"})
COUNTS = ("listed", "written", "unchanged", "deleted", "failed")
_deserialize = TypeDeserializer().deserialize


def entry(item: dict[str, Any]) -> tuple[Entry, str | None]:
    """The ``Entry`` of a record, and its text (``None`` for a binary value).

    Raises
    ------
    RecordFormatError
        The item is not a record kv-sync writes (no value, unknown type or encoding).
    """
    key = _string(item, "key")
    value_type = _string(item, "value_type")
    if value_type not in VALUE_TYPES:
        raise RecordFormatError(f"Record of {key!r} has an unknown value_type {value_type!r}")
    raw, text = _value(item, key, value_type)
    expiration = item.get("expiration", {}).get("N")
    updated_at = item.get("updated_at", {}).get("S")
    decoded = Entry(
        key=key,
        value=raw,
        value_type=value_type,
        metadata=plain(_deserialize(item["metadata"])) if "metadata" in item else None,
        expiration=None if expiration is None else int(Decimal(expiration)),
        updated_at=None if updated_at is None else timestamp(updated_at),
    )
    return decoded, text


def _value(item: dict[str, Any], key: str, value_type: str) -> tuple[bytes, str | None]:
    stored = item.get("value", {})
    encoding = item.get("value_encoding", {}).get("S")
    if "S" in stored and encoding is None and value_type != "binary":
        return stored["S"].encode("utf-8"), stored["S"]
    if "B" not in stored:
        raise RecordFormatError(f"Record of {key!r} has no value of a known DynamoDB type")
    raw = bytes(stored["B"])
    if encoding == "gzip":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise RecordFormatError(f"Record of {key!r}: gzip value does not decompress") from error
    elif encoding is not None:
        raise RecordFormatError(f"Record of {key!r} has an unknown value_encoding {encoding!r}")
    if value_type == "binary":
        return raw, None
    try:
        return raw, raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RecordFormatError(f"Record of {key!r} is typed {value_type} but not UTF-8") from error


def parse_json(key: str, text: str) -> Any:
    """A text value parsed as strict JSON (``NaN`` and ``Infinity`` are not JSON).

    Raises
    ------
    NotJSONError
        The text is not JSON.
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise NotJSONError(f"The value of {key!r} is not JSON; read it with get()") from error


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def freshness(item: dict[str, Any], now: float) -> Freshness:
    """The ``Freshness`` of a sync-state item, its age taken at ``now`` (epoch seconds)."""
    state = {name: plain(_deserialize(value)) for name, value in item.items()}
    last = state.get("last_run") or {}
    complete = state.get("last_complete") or {}
    finished = _optional_timestamp(complete.get("finished_at"))
    counts = {name: _optional_int(complete.get(name)) for name in COUNTS}
    return Freshness(
        selector=_selector(state.get("selector")),
        last_complete_started_at=_optional_timestamp(complete.get("started_at")),
        last_complete_finished_at=finished,
        age_seconds=None if finished is None else max(0.0, now - finished.timestamp()),
        listed=counts["listed"],
        written=counts["written"],
        unchanged=counts["unchanged"],
        deleted=counts["deleted"],
        failed=counts["failed"],
        last_run_complete=last.get("complete") is True,
        last_run_started_at=_optional_timestamp(last.get("started_at")),
        last_run_finished_at=_optional_timestamp(last.get("finished_at")),
        last_run_error_type=last.get("error_type"),
        updated_at=_optional_timestamp(state.get("updated_at")),
    )


def plain(value: Any) -> Any:
    """A deserialized DynamoDB value as plain Python: numbers as ``int`` when
    integral, else ``float``; Binary as ``bytes``; sets as sorted lists."""
    if isinstance(value, Decimal):
        return (
            int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
        )
    if isinstance(value, dict):
        return {name: plain(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [plain(inner) for inner in value]
    if isinstance(value, Binary):
        return bytes(value.value)
    if isinstance(value, set | frozenset):
        return sorted(plain(inner) for inner in value)
    return value


def timestamp(text: str) -> datetime:
    """An ISO-8601 timestamp as an aware UTC datetime (``Z`` or an offset; naive is UTC).

    Raises
    ------
    RecordFormatError
        The text is not an ISO-8601 timestamp.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise RecordFormatError(f"{text!r} is not an ISO-8601 timestamp") from error
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _optional_timestamp(value: Any) -> datetime | None:
    return timestamp(value) if isinstance(value, str) else None


def _optional_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _selector(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _string(item: dict[str, Any], name: str) -> str:
    try:
        text: str = item[name]["S"]
    except (KeyError, TypeError) as error:
        raise RecordFormatError(f"Record has no string attribute {name!r}") from error
    return text
