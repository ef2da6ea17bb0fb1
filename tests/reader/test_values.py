"""``KVMirror`` reads values exactly as KV holds them, from records the real sync wrote.

Each test puts keys in the fake namespace, runs the function (the whole
namespace, or named keys), and reads the table back through the reader.
"""

from __future__ import annotations

import gzip
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from kv_sync_reader import BinaryValueError, Entry, NotJSONError
from tests.support.cloudflare import FakeNamespace, stored_item

MIB = 1024 * 1024


def test_text_value_round_trips_exactly(kv: FakeNamespace, sync: Any, mirror_factory: Any):
    # GIVEN text with non-ASCII characters, trailing whitespace and CRLF, synced
    text = "Grüße, 世界 🚀\r\n  trailing  \n"
    kv.put("greeting", text)
    sync()

    # WHEN the reader reads it
    mirror = mirror_factory()

    # THEN the text and its UTF-8 bytes are exactly KV's
    assert mirror.get("greeting") == text
    assert mirror.get_bytes("greeting") == text.encode("utf-8")
    entry = mirror.get_entry("greeting")
    assert entry is not None
    assert entry.value_type == "string"


def test_json_value_is_parsed(kv: FakeNamespace, sync: Any, mirror_factory: Any):
    # GIVEN a JSON flag, synced
    flag = {"enabled": True, "percentage": 25, "allow": ["eu-west-1"], "ratio": 0.5}
    kv.put("flags/checkout", json.dumps(flag))
    sync()

    # WHEN it is read as JSON
    mirror = mirror_factory()
    value = mirror.get_json("flags/checkout")

    # THEN it is the flag; get gives the JSON text as KV holds it
    assert value == flag
    assert mirror.get("flags/checkout") == json.dumps(flag)


def test_get_json_returns_a_fresh_object_each_time(
    kv: FakeNamespace, sync: Any, mirror_factory: Any
):
    # GIVEN a JSON value read once and changed by the caller
    kv.put("config", json.dumps({"limits": [1, 2]}))
    sync()
    mirror = mirror_factory()
    first = mirror.get_json("config")
    first["limits"].append(3)

    # WHEN it is read again (from the cache)
    again = mirror.get_json("config")

    # THEN the caller's change did not reach the cache
    assert again == {"limits": [1, 2]}


def test_get_json_of_plain_text_says_it_is_not_json(
    kv: FakeNamespace, sync: Any, mirror_factory: Any
):
    # GIVEN a text value that is not JSON (NaN is not, although Python would parse it)
    kv.put("motd", "hello")
    kv.put("not-a-number", "NaN")
    sync()
    mirror = mirror_factory()

    # WHEN they are read as JSON THEN the error says so and points to get
    for key in ("motd", "not-a-number"):
        with pytest.raises(NotJSONError, match=r"not JSON; read it with get\(\)"):
            mirror.get_json(key)


def test_binary_value_round_trips_and_text_reads_point_to_get_bytes(
    kv: FakeNamespace, sync: Any, mirror_factory: Any
):
    # GIVEN bytes that are not UTF-8, synced (Cloudflare's bulk get refuses them;
    # the function reads them raw)
    raw = bytes([0xFF, 0xFE, 0x00, 0x80]) + bytes(range(256))
    kv.put("blob", raw)
    sync()
    mirror = mirror_factory()

    # WHEN they are read
    # THEN get_bytes gives them exactly, and get / get_json refuse, naming get_bytes
    assert mirror.get_bytes("blob") == raw
    for read in (mirror.get, mirror.get_json):
        with pytest.raises(BinaryValueError, match=r"binary .*read it with get_bytes\(\)"):
            read("blob")
    entry = mirror.get_entry("blob")
    assert entry is not None
    assert (entry.value_type, entry.is_text) == ("binary", False)


def test_large_text_value_stored_compressed_round_trips(
    kv: FakeNamespace, sync: Any, aws: Any, mirror_factory: Any
):
    # GIVEN a JSON value of ~600 KB, too big for a DynamoDB item unless compressed
    rows = [{"id": i, "name": f"user-{i:06d}", "plan": "essentials"} for i in range(12_000)]
    text = json.dumps({"rows": rows})
    assert len(text) > 600_000
    kv.put("big/config", text)
    sync()
    record = stored_item(aws, "big/config")
    assert record is not None
    assert record["value_encoding"] == "gzip"

    # WHEN the reader reads it
    mirror = mirror_factory()

    # THEN it gets the text back exactly, and parsed
    assert mirror.get("big/config") == text
    assert mirror.get_json("big/config") == {"rows": rows}
    assert mirror.get_bytes("big/config") == text.encode("utf-8")


def test_large_binary_value_stored_compressed_round_trips(
    kv: FakeNamespace, sync: Any, aws: Any, mirror_factory: Any
):
    # GIVEN 500 KB of compressible bytes that are not UTF-8
    raw = (bytes([0xFF, 0xC0]) + b"pattern-" * 8) * 28_000
    assert len(raw) > 500_000
    kv.put("big/blob", raw)
    sync()
    record = stored_item(aws, "big/blob")
    assert record is not None
    assert (record["value_encoding"], record["value_type"]) == ("gzip", "binary")
    assert gzip.decompress(bytes(record["value"])) == raw

    # WHEN the reader reads it THEN the bytes are exact, and text reads refuse
    mirror = mirror_factory()
    assert mirror.get_bytes("big/blob") == raw
    with pytest.raises(BinaryValueError):
        mirror.get("big/blob")


def test_entry_carries_metadata_expiration_and_update_time(
    kv: FakeNamespace, sync: Any, mirror_factory: Any
):
    # GIVEN a key with metadata (integers, a fraction, nesting) and an expiration
    metadata = {"owner": "growth", "version": 3, "weight": 0.25, "tags": ["a", 7], "n": {"m": 1}}
    expiration = int(time.time()) + 3_600
    kv.put("flags/beta", "on", metadata=metadata, expiration=expiration)
    before = datetime.now(UTC)
    sync()
    after = datetime.now(UTC)

    # WHEN its entry is read
    entry = mirror_factory().get_entry("flags/beta")

    # THEN it has KV's metadata as plain Python (3 an int, 0.25 a float), the
    # expiration, and the sync's read time as an aware UTC datetime
    assert entry is not None
    assert entry.metadata == metadata
    assert isinstance(entry.metadata["version"], int)
    assert isinstance(entry.metadata["weight"], float)
    assert entry.expiration == expiration
    assert entry.updated_at is not None
    assert entry.updated_at.tzinfo is not None
    assert before <= entry.updated_at <= after
    assert entry == Entry("flags/beta", b"on", "string", metadata, expiration, entry.updated_at)


def test_key_without_metadata_has_none(kv: FakeNamespace, sync: Any, mirror_factory: Any):
    # GIVEN a key with neither metadata nor expiration
    kv.put("plain", "x")
    sync()

    # WHEN its entry is read THEN both are None
    entry = mirror_factory().get_entry("plain")
    assert entry is not None
    assert (entry.metadata, entry.expiration) == (None, None)


def test_absent_key_reads_as_none_everywhere(aws: Any, mirror_factory: Any):
    # GIVEN a table with no record of the key
    mirror = mirror_factory()

    # WHEN it is read in every way THEN each gives None
    assert mirror.get("missing") is None
    assert mirror.get_json("missing") is None
    assert mirror.get_bytes("missing") is None
    assert mirror.get_entry("missing") is None


def test_expired_record_reads_as_absent(
    kv: FakeNamespace, sync: Any, aws: Any, mirror_factory: Any, wall_clock: Any
):
    # GIVEN a key that expires in a minute, synced, and a record DynamoDB's TTL
    # has not deleted yet
    expiration = int(wall_clock()) + 60
    kv.put("session/abc", "token", expiration=expiration)
    sync()
    mirror = mirror_factory(cache_ttl=0)
    assert mirror.get("session/abc") == "token"

    # WHEN its expiration passes
    wall_clock.now = expiration

    # THEN every read gives None though the record is still in the table
    assert stored_item(aws, "session/abc") is not None
    assert mirror.get("session/abc") is None
    assert mirror.get_bytes("session/abc") is None
    assert mirror.get_entry("session/abc") is None


def test_value_changed_in_kv_is_read_after_the_next_sync(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, clock: Any
):
    # GIVEN a value read through the reader
    kv.put("flags/beta", "off")
    sync()
    mirror = mirror_factory(cache_ttl=30)
    assert mirror.get("flags/beta") == "off"

    # WHEN KV changes, a sync runs and the cache's TTL passes
    kv.put("flags/beta", "on")
    sync()
    clock.advance(30)

    # THEN the reader gives the new value
    assert mirror.get("flags/beta") == "on"


@pytest.mark.parametrize("value", ["", "0", " ", "null"])
def test_edge_text_values_are_not_confused_with_absence(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, value: str
):
    # GIVEN an empty or falsy-looking text value
    kv.put("edge", value)
    sync(key_names=["edge"])

    # WHEN it is read THEN it is that text, not None
    assert mirror_factory().get("edge") == value
