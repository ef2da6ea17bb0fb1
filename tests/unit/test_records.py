"""Building the DynamoDB record for one KV entry (``kv_sync.records``)."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeSerializer

from kv_sync.errors import ValueTooLargeError
from kv_sync.model import KVEntry, Record, utc_timestamp
from kv_sync.records import build_record, content_hash, item_size, partition_key, sort_key

NAMESPACE_ID = "0f2ac74b498b48028cb68387c421e279"
NAMESPACE_NAME = "flags"
SYNCED = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
DYNAMODB_ITEM_LIMIT = 400 * 1024
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def entry(
    value: bytes | str = b"value",
    *,
    key: str = "classic-domain",
    metadata: Any = None,
    expiration: int | None = None,
) -> KVEntry:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return KVEntry(key=key, value=raw, metadata=metadata, expiration=expiration)


def build(kv: KVEntry, *, synced: datetime = SYNCED, ttl_days: int = 30) -> Record:
    return build_record(
        kv,
        namespace_id=NAMESPACE_ID,
        namespace_name=NAMESPACE_NAME,
        synced=synced,
        ttl_days=ttl_days,
    )


def full_item(record: Record) -> dict[str, Any]:
    """The item as the store writes it (plus created/updated at their largest)."""
    return {
        "pk": record.pk,
        "sk": record.sk,
        "created_at": record.synced_at,
        "updated_at": record.synced_at,
        "content_sha256": record.content_sha256,
        **record.attributes,
    }


def independent_size(item: dict[str, Any]) -> int:
    """DynamoDB item size per the AWS docs, computed without records.item_size.

    Names + UTF-8 strings + binary bytes; numbers count 21 bytes (their maximum);
    maps/lists 3 bytes plus 1 per element. Over-estimates, never under-estimates.
    """

    def size(value: Any) -> int:
        if isinstance(value, str):
            return len(value.encode("utf-8"))
        if isinstance(value, Binary):
            return len(bytes(value))
        if isinstance(value, bool) or value is None:
            return 1
        if isinstance(value, int | Decimal):
            return 21
        if isinstance(value, dict):
            return 3 + sum(len(k.encode()) + size(v) + 1 for k, v in value.items())
        if isinstance(value, list):
            return 3 + sum(size(v) + 1 for v in value)
        raise TypeError(type(value))

    return sum(len(name.encode("utf-8")) + size(value) for name, value in item.items())


# ------------------------------------------------------------------ keys and layout


def test_record_has_documented_keys_and_attributes():
    # GIVEN a plain KV entry
    kv = entry("hello", key="classic-domain")

    # WHEN its record is built
    record = build(kv)

    # THEN pk/sk follow the single-table layout and the documented attributes are set
    assert record.pk == f"NAMESPACE#{NAMESPACE_ID}"
    assert record.sk == "KEY#classic-domain"
    attrs = record.attributes
    assert attrs["key"] == "classic-domain"
    assert attrs["namespace_id"] == NAMESPACE_ID
    assert attrs["namespace_name"] == NAMESPACE_NAME
    assert attrs["synced_at"] == record.synced_at
    assert "value_encoding" not in attrs


@pytest.mark.parametrize("key", ["../../tokens/verify", "a/b?c#d", "KEY#nested", "ключ 😀"])
def test_sort_key_holds_the_key_name_verbatim(key):
    # GIVEN a key name with separators, reserved characters or non-ASCII text
    # WHEN its record is built
    record = build(entry("v", key=key))

    # THEN sk is "KEY#" + the exact name, and the key attribute is the name itself
    assert record.sk == "KEY#" + key == sort_key(key)
    assert record.attributes["key"] == key


def test_partition_key_is_the_documented_namespace_key():
    # GIVEN a namespace id
    # WHEN its partition key is asked for (services read records with it)
    # THEN it is NAMESPACE#<id>, the pk of every record built for that namespace
    assert partition_key(NAMESPACE_ID) == f"NAMESPACE#{NAMESPACE_ID}"
    assert build(entry("v")).pk == partition_key(NAMESPACE_ID)


def test_record_attributes_are_serialisable_by_boto3():
    # GIVEN an entry with every optional part: metadata with floats, an expiration
    kv = entry('{"a": 1}', metadata={"pct": 12.5, "tags": ["x", 1.25]}, expiration=1_900_000_000)

    # WHEN its record is built and serialised the way boto3 will send it
    record = build(kv)
    serialised = {k: TypeSerializer().serialize(v) for k, v in full_item(record).items()}

    # THEN boto3 accepts every attribute (floats would raise TypeError here)
    assert serialised["metadata"]["M"]["pct"] == {"N": "12.5"}
    assert serialised["ttl"] == {"N": "1900000000"}


# -------------------------------------------------------------------- value types


@pytest.mark.parametrize(
    "text",
    ['{"enabled": true}', "[1, 2, 3]", "1", "true", "false", "null", '"quoted"', "-0.5e3", " 1 "],
)
def test_text_that_parses_as_json_is_value_type_json(text):
    # GIVEN a KV value that is a JSON document (any JSON value, not only objects)
    # WHEN its record is built
    record = build(entry(text))

    # THEN it is typed json and stored as the exact original text
    assert record.value_type == "json"
    assert record.attributes["value_type"] == "json"
    assert record.attributes["value"] == text


@pytest.mark.parametrize(
    "text", ["https://example.com/essentials", "hello world", "{not json}", "True", "'single'", ""]
)
def test_text_that_is_not_json_is_value_type_string(text):
    # GIVEN a KV value that is plain text
    # WHEN its record is built
    record = build(entry(text))

    # THEN it is typed string and stored as the same text
    assert record.value_type == "string"
    assert record.attributes["value"] == text


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"ratio": NaN}'])
def test_non_standard_json_literals_are_not_value_type_json(text):
    # GIVEN a KV value that Python's json module accepts but RFC 8259 / JSON.parse do not
    # WHEN its record is built
    record = build(entry(text))

    # THEN consumers are not told it is JSON they can parse
    assert record.value_type == "string"


def test_deeply_nested_value_is_stored_not_crashed_on():
    # GIVEN a 10 KB KV value nested 5,000 levels deep (valid JSON)
    text = "[" * 5_000 + "]" * 5_000

    # WHEN its record is built
    record = build(entry(text))

    # THEN the value is stored exactly; it is a readable sync, not an internal error
    assert record.attributes["value"] == text
    assert record.value_type in {"json", "string"}


@pytest.mark.parametrize(
    "text",
    [
        "  padded with spaces  ",
        "line one\r\nline two\n",
        '{ "spaced" :  true ,\n  "order": [3,1,2] }',
        "unicode: é ü 日本 😀 \u200b",
        "tab\tseparated",
    ],
)
def test_text_is_preserved_exactly(text):
    # GIVEN text with whitespace, line endings, formatting and non-ASCII characters
    # WHEN its record is built
    record = build(entry(text))

    # THEN the stored value is byte-for-byte the KV value (no reformatting, no strip)
    assert record.attributes["value"] == text
    assert record.attributes["value"].encode("utf-8") == text.encode("utf-8")


def test_json_value_is_not_reserialised():
    # GIVEN JSON with key order and spacing a re-dump would change
    text = '{"z":1,  "a":2.50}'

    # WHEN its record is built
    record = build(entry(text))

    # THEN the stored text is unchanged
    assert record.attributes["value"] == text


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe\x00\x01", b"\x89PNG\r\n\x1a\n\x00\x00", b"valid prefix \xc3", b"\xed\xa0\x80"],
    ids=["bom-ish", "png-header", "truncated-utf8", "encoded-surrogate"],
)
def test_bytes_that_are_not_utf8_are_stored_as_binary(raw):
    # GIVEN a KV value that is not valid UTF-8
    # WHEN its record is built
    record = build(entry(raw))

    # THEN it is typed binary and stored as DynamoDB Binary with the same bytes
    assert record.value_type == "binary"
    value = record.attributes["value"]
    assert isinstance(value, Binary)
    assert bytes(value) == raw


def test_binary_value_that_happens_to_be_utf8_is_stored_as_text():
    # GIVEN bytes (e.g. a file upload) that are valid UTF-8, including NUL
    raw = b"abc\x00def"

    # WHEN its record is built
    record = build(entry(raw))

    # THEN it is stored as text with the same content
    assert record.value_type == "string"
    assert record.attributes["value"].encode("utf-8") == raw


# ------------------------------------------------------------------ hash and size


@pytest.mark.parametrize("raw", [b"", b"hello", "日本😀".encode(), b"\xff\x00\xfe"])
def test_sha256_and_size_are_of_the_raw_bytes(raw):
    # GIVEN a KV value (text, multibyte text or binary)
    # WHEN its record is built
    record = build(entry(raw))

    # THEN the hash and size describe the raw bytes, not characters
    assert record.attributes["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert record.attributes["size_bytes"] == len(raw)
    assert record.size_bytes == len(raw)


# ------------------------------------------------------------------------ metadata


def test_metadata_numbers_become_decimal_and_int_in_nested_maps_and_lists():
    # GIVEN metadata with floats and ints at every depth
    metadata = {
        "pct": 12.5,
        "count": 3,
        "big": 12345678901234567890,
        "tiny": 0.1,
        "flag": True,
        "none": None,
        "name": "web",
        "nested": {"weights": [0.25, 1, {"deep": 2.75}], "empty": {}},
    }

    # WHEN its record is built
    stored = build(entry("v", metadata=metadata)).attributes["metadata"]

    # THEN floats are exact Decimals, ints stay ints, everything else unchanged
    assert stored == {
        "pct": Decimal("12.5"),
        "count": 3,
        "big": 12345678901234567890,
        "tiny": Decimal("0.1"),
        "flag": True,
        "none": None,
        "name": "web",
        "nested": {"weights": [Decimal("0.25"), 1, {"deep": Decimal("2.75")}], "empty": {}},
    }
    assert isinstance(stored["count"], int)
    assert stored["flag"] is True
    assert not any(isinstance(v, float) for v in stored["nested"]["weights"])


def test_metadata_float_is_decimal_of_its_shortest_repr_not_binary_expansion():
    # GIVEN a float that has no exact binary representation
    # WHEN its record is built
    stored = build(entry("v", metadata={"x": 0.1})).attributes["metadata"]

    # THEN DynamoDB gets 0.1, not 0.1000000000000000055511151231257827
    assert str(stored["x"]) == "0.1"


def test_metadata_top_level_list_and_scalar_are_kept():
    # GIVEN metadata that is a JSON list, or a bare string (KV allows any JSON)
    # WHEN records are built
    as_list = build(entry("v", metadata=[1.5, "a"])).attributes["metadata"]
    as_text = build(entry("v", metadata="owner:web")).attributes["metadata"]

    # THEN they are stored with numbers converted
    assert as_list == [Decimal("1.5"), "a"]
    assert as_text == "owner:web"


def test_no_metadata_means_no_metadata_attribute():
    # GIVEN an entry without metadata
    # WHEN its record is built
    record = build(entry("v", metadata=None))

    # THEN the attribute is absent (not a NULL attribute)
    assert "metadata" not in record.attributes


def test_caller_metadata_is_not_mutated():
    # GIVEN metadata the caller still holds
    metadata = {"pct": 12.5, "list": [1.5]}

    # WHEN a record is built from it
    build(entry("v", metadata=metadata))

    # THEN the caller's floats are untouched
    assert metadata == {"pct": 12.5, "list": [1.5]}


# ---------------------------------------------------------------- expiration & ttl


def test_expiration_sets_expiration_and_ttl_to_it():
    # GIVEN a KV entry that expires at a known epoch second
    kv = entry("v", expiration=1_900_000_000)

    # WHEN its record is built
    record = build(kv, ttl_days=30)

    # THEN both expiration and ttl are that time
    assert record.attributes["expiration"] == 1_900_000_000
    assert record.attributes["ttl"] == 1_900_000_000
    assert record.ttl == 1_900_000_000


@pytest.mark.parametrize("ttl_days", [1, 30, 365])
def test_no_expiration_means_ttl_is_synced_plus_ttl_days(ttl_days):
    # GIVEN an entry that never expires in KV
    kv = entry("v", expiration=None)

    # WHEN its record is built with a retention of ttl_days
    record = build(kv, ttl_days=ttl_days)

    # THEN ttl is the sync time plus that many days, in whole epoch seconds
    expected = int(SYNCED.timestamp()) + ttl_days * 86_400
    assert record.attributes["ttl"] == expected
    assert isinstance(record.attributes["ttl"], int)
    assert record.ttl == expected
    assert "expiration" not in record.attributes


def test_ttl_days_zero_without_expiration_means_no_ttl():
    # GIVEN RECORD_TTL_DAYS=0 and an entry that never expires
    # WHEN its record is built
    record = build(entry("v"), ttl_days=0)

    # THEN the record is kept forever: no ttl attribute at all
    assert "ttl" not in record.attributes
    assert record.ttl is None


# ---------------------------------------------------------------------- timestamps


def test_synced_at_is_iso8601_utc_with_z_and_microseconds():
    # GIVEN a sync time with microseconds
    # WHEN the record is built
    record = build(entry("v"), synced=SYNCED)

    # THEN synced_at is ISO-8601 UTC ending in Z
    assert record.synced_at == "2026-11-21T12:00:00.123456Z"
    assert record.attributes["synced_at"] == record.synced_at


def test_timestamps_have_fixed_width_so_they_sort_like_times():
    # GIVEN a whole second and a time a microsecond later
    earlier = datetime(2026, 1, 1, 0, 0, 0, 0, tzinfo=UTC)
    later = earlier + timedelta(microseconds=1)

    # WHEN both are formatted
    a, b = utc_timestamp(earlier), utc_timestamp(later)

    # THEN both have six fractional digits and compare as strings like the times do
    assert a == "2026-01-01T00:00:00.000000Z"
    assert TIMESTAMP.match(a)
    assert TIMESTAMP.match(b)
    assert a < b


def test_non_utc_sync_time_is_converted_to_utc():
    # GIVEN a sync time expressed in UTC+02:00
    local = datetime(2026, 11, 21, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))

    # WHEN the record is built
    record = build(entry("v"), synced=local)

    # THEN the timestamp is the same instant in UTC, and ttl uses that instant
    assert record.synced_at == "2026-11-21T12:00:00.000000Z"
    assert record.ttl == int(datetime(2026, 11, 21, 12, tzinfo=UTC).timestamp()) + 30 * 86_400


# ------------------------------------------------------------------- compression


def test_value_that_fits_only_compressed_is_stored_gzip():
    # GIVEN a 1 MB text value that compresses well
    raw = ("redirect-all-users-to-essentials " * 32_000).encode()
    assert len(raw) > DYNAMODB_ITEM_LIMIT

    # WHEN its record is built
    record = build(entry(raw))

    # THEN the value is gzip Binary that decompresses to the original bytes
    value = record.attributes["value"]
    assert record.attributes["value_encoding"] == "gzip"
    assert isinstance(value, Binary)
    assert gzip.decompress(bytes(value)) == raw
    # ... while the type, size and hash still describe the original value
    assert record.value_type == "string"
    assert record.attributes["size_bytes"] == len(raw)
    assert record.attributes["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert independent_size(full_item(record)) <= DYNAMODB_ITEM_LIMIT


def test_large_binary_value_that_compresses_is_stored_gzip():
    # GIVEN a 500 KB non-UTF-8 value with lots of repetition
    raw = b"\xff\xfe" + bytes(range(256)) * 2_000

    # WHEN its record is built
    record = build(entry(raw))

    # THEN it is gzip-compressed, typed binary, and round-trips
    assert record.attributes["value_encoding"] == "gzip"
    assert record.value_type == "binary"
    assert gzip.decompress(bytes(record.attributes["value"])) == raw


def test_incompressible_value_over_400_kb_is_value_too_large():
    # GIVEN 450 KB of random bytes, which gzip cannot shrink
    raw = random.Random(0).randbytes(450_000)

    # WHEN its record is built
    with pytest.raises(ValueTooLargeError) as info:
        build(entry(raw, key="huge-blob"))

    # THEN it fails as VALUE_TOO_LARGE, not retryable, naming the key and size
    error = info.value
    assert error.type == "VALUE_TOO_LARGE"
    assert error.is_retryable is False
    assert "huge-blob" in error.message
    assert "450,000" in error.message


def test_incompressible_value_that_fits_is_stored_raw():
    # GIVEN 300 KB of random bytes (fits without compression)
    raw = random.Random(2).randbytes(300_000)

    # WHEN its record is built
    record = build(entry(raw))

    # THEN it is stored as plain Binary, with no encoding marker
    assert "value_encoding" not in record.attributes
    assert bytes(record.attributes["value"]) == raw


def largest_uncompressed(key: str = "classic-domain") -> int:
    """The largest ``b"a" * n`` value still stored without compression."""

    def compressed(n: int) -> bool:
        return "value_encoding" in build(entry(b"a" * n, key=key)).attributes

    low, high = 300_000, 420_000
    assert not compressed(low)
    assert compressed(high)
    while high - low > 1:
        mid = (low + high) // 2
        if compressed(mid):
            high = mid
        else:
            low = mid
    return low


def test_compression_starts_only_where_the_item_would_exceed_the_limit():
    # GIVEN the largest text value that is still stored uncompressed
    n = largest_uncompressed()

    # WHEN that item is measured independently of records.item_size
    largest = build(entry(b"a" * n))

    # THEN it is within DynamoDB's limit, and values under 400,000 bytes are never compressed
    assert independent_size(full_item(largest)) <= DYNAMODB_ITEM_LIMIT
    assert n >= 400_000


def test_long_key_names_count_towards_the_item_size():
    # GIVEN a 512-byte key name (stored twice: as `key` and inside `sk`)
    long_key = "😀" * 128

    # WHEN the compression threshold is found for it and for a 1-byte key
    short_limit = largest_uncompressed("k")
    long_limit = largest_uncompressed(long_key)

    # THEN the long key leaves about 2 x 511 fewer bytes for the value
    assert short_limit - long_limit >= 2 * 511


# -------------------------------------------------------------------- content hash


BASE_VALUE = b'{"enabled": true}'
BASE_METADATA = {"owner": "web"}
BASE_EXPIRATION = 1_900_000_000


def hash_of(
    value: bytes = BASE_VALUE,
    metadata: Any = BASE_METADATA,
    expiration: int | None = BASE_EXPIRATION,
    **kwargs: Any,
) -> str:
    kv = entry(value, metadata=metadata, expiration=expiration)
    return build(kv, **kwargs).content_sha256


def test_content_hash_is_stable_for_the_same_entry():
    # GIVEN the same entry synced at different times with different TTL settings
    # WHEN records are built
    first = hash_of(synced=SYNCED, ttl_days=30)
    second = hash_of(synced=SYNCED + timedelta(days=3), ttl_days=0)

    # THEN the hash is the same, so a re-sync is not reported as a change
    assert first == second


def test_content_hash_ignores_metadata_key_order():
    # GIVEN the same metadata with keys in a different order
    # WHEN hashes are computed
    # THEN they are equal (Cloudflare does not promise an order)
    assert hash_of(metadata={"a": 1, "b": 2}) == hash_of(metadata={"b": 2, "a": 1})


@pytest.mark.parametrize(
    "changed",
    [
        {"value": b'{"enabled": false}'},
        {"value": b'{"enabled":true}'},  # whitespace only
        {"metadata": {"owner": "api"}},
        {"metadata": None},
        {"metadata": {"owner": "web", "extra": 1}},
        {"expiration": 1_900_000_001},
        {"expiration": None},
    ],
    ids=[
        "value",
        "value-whitespace",
        "metadata",
        "metadata-removed",
        "metadata-added",
        "expiration",
        "expiration-removed",
    ],
)
def test_content_hash_changes_when_value_metadata_or_expiration_change(changed):
    # GIVEN an entry and a copy differing in one thing a reader would notice
    # WHEN hashes are computed
    # THEN they differ, so the change is reported and updated_at moves
    assert hash_of(**changed) != hash_of()


def test_content_hash_function_matches_record():
    # GIVEN a built record
    record = build(entry(BASE_VALUE, metadata=BASE_METADATA, expiration=BASE_EXPIRATION))

    # WHEN content_hash is called with the same parts
    direct = content_hash(hashlib.sha256(BASE_VALUE).hexdigest(), BASE_METADATA, BASE_EXPIRATION)

    # THEN the store and the record agree on what "unchanged" means
    assert direct == record.content_sha256


# ----------------------------------------------------------------------- item_size


def test_item_size_counts_a_300000_byte_string_fully():
    # GIVEN an item with a 300,000-byte string value
    item = {"value": "a" * 300_000}

    # WHEN its size is computed
    # THEN it counts at least the value's bytes plus the attribute name
    assert item_size(item) >= 300_000 + len("value")


def test_item_size_counts_utf8_bytes_not_characters():
    # GIVEN 100,000 three-byte characters (300,000 bytes)
    item = {"value": "€" * 100_000}

    # WHEN its size is computed
    # THEN it is measured in bytes
    assert item_size(item) >= 300_000


def test_item_size_counts_binary_and_nested_values():
    # GIVEN binary data and a map holding a long string in a list
    item = {"blob": Binary(b"\x00" * 50_000), "m": {"list": ["x" * 20_000, Decimal("1.5")]}}

    # WHEN its size is computed
    # THEN both large parts are counted
    assert item_size(item) >= 70_000


def test_item_size_counts_attribute_names():
    # GIVEN two items with the same value under names of different length
    short = item_size({"a": "v"})
    long = item_size({"a" * 1_000: "v"})

    # THEN the longer name costs its bytes
    assert long - short == 999


def test_metadata_counts_towards_the_size_limit():
    # GIVEN a value that fits alone but not with 50 KB of metadata
    metadata = {"notes": "n" * 50_000}
    raw = b"a" * 380_000

    # WHEN records are built with and without the metadata
    without = build(entry(raw))
    with_meta = build(entry(raw, metadata=metadata))

    # THEN only the one with metadata needs compression
    assert "value_encoding" not in without.attributes
    assert with_meta.attributes["value_encoding"] == "gzip"
    assert with_meta.attributes["metadata"] == metadata


def test_json_parsing_of_large_values_still_types_them():
    # GIVEN a large JSON value that must be compressed
    raw = json.dumps({"items": list(range(100_000))}).encode()
    assert len(raw) > DYNAMODB_ITEM_LIMIT

    # WHEN its record is built
    record = build(entry(raw))

    # THEN it is still typed json (the type describes the original text)
    assert record.value_type == "json"
    assert record.attributes["value_encoding"] == "gzip"
