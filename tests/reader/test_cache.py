"""``KVMirror``'s cache: TTL, absent keys, stale-while-revalidate across threads,
stale-if-error within ``max_stale``, and KV expirations honoured from the cache.

DynamoDB calls are those of the reader's client (``dynamodb_calls``); the
clocks are fake, so nothing sleeps.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kv_sync_reader import MirrorUnavailableError
from tests.support.cloudflare import FakeNamespace

WAIT_S = 10  # only a guard against a hung test; nothing is timed


def test_reads_within_cache_ttl_make_no_dynamodb_call(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any, clock: Any
):
    # GIVEN a value read once
    kv.put("flags/beta", "on")
    sync()
    mirror = mirror_factory(cache_ttl=30)
    assert mirror.get("flags/beta") == "on"

    # WHEN it is read in every way until just before the TTL ends
    clock.advance(29.9)
    reads = [
        mirror.get("flags/beta"),
        mirror.get_bytes("flags/beta"),
        mirror.get_entry("flags/beta"),
    ]

    # THEN only the first read called DynamoDB
    assert dynamodb_calls.names("GetItem") == ["GetItem"]
    assert reads[:2] == ["on", b"on"]

    # AND once the TTL is over, the next read calls it again
    clock.advance(0.1)
    mirror.get("flags/beta")
    assert dynamodb_calls.names("GetItem") == ["GetItem", "GetItem"]


def test_absent_key_is_cached_too(aws: Any, mirror_factory: Any, dynamodb_calls: Any, clock: Any):
    # GIVEN a key with no record, read once
    mirror = mirror_factory(cache_ttl=30)
    assert mirror.get("missing") is None

    # WHEN it is read again within the TTL
    clock.advance(10)
    again = [mirror.get("missing"), mirror.get_json("missing"), mirror.get_entry("missing")]

    # THEN the absence came from the cache: one GetItem in all
    assert again == [None, None, None]
    assert dynamodb_calls.names("GetItem") == ["GetItem"]


def test_zero_cache_ttl_reads_dynamodb_every_time(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any
):
    # GIVEN a reader without caching
    kv.put("k", "v")
    sync()
    mirror = mirror_factory(cache_ttl=0)

    # WHEN a key is read three times THEN each read is a GetItem
    for _ in range(3):
        assert mirror.get("k") == "v"
    assert len(dynamodb_calls.names("GetItem")) == 3


def test_reads_are_eventually_consistent_by_default_and_consistent_on_request(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any
):
    # GIVEN a key, and one reader of each kind
    kv.put("k", "v")
    sync()

    # WHEN each reads the key, lists keys and reads the freshness
    for consistent in (False, True):
        mirror = mirror_factory(consistent_read=consistent)
        mirror.get("k")
        list(mirror.keys())
        mirror.freshness()

    # THEN the default reader's calls ask for eventual consistency, the other's
    # for strong consistency
    gets = [params["ConsistentRead"] for params in dynamodb_calls.params("GetItem")]
    queries = [params["ConsistentRead"] for params in dynamodb_calls.params("Query")]
    assert gets == [False, False, True, True]
    assert queries == [False, True]


def test_after_ttl_one_caller_refreshes_while_the_others_get_the_cached_value(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any, clock: Any
):
    # GIVEN a cached value whose TTL is over, and a new value in the table
    kv.put("flags/beta", "old")
    sync()
    mirror = mirror_factory(cache_ttl=5)
    assert mirror.get("flags/beta") == "old"
    kv.put("flags/beta", "new")
    sync()
    clock.advance(5)

    # WHEN one caller starts the refresh (held inside its GetItem) and 16 others read
    in_get_item, release = threading.Event(), threading.Event()

    def hold(operation: str) -> None:
        if operation == "GetItem":
            in_get_item.set()
            assert release.wait(WAIT_S)

    dynamodb_calls.before.append(hold)
    dynamodb_calls.calls.clear()
    with ThreadPoolExecutor(max_workers=17) as pool:
        refresher = pool.submit(mirror.get, "flags/beta")
        assert in_get_item.wait(WAIT_S)
        others = [pool.submit(mirror.get, "flags/beta") for _ in range(16)]
        stale = [future.result(timeout=WAIT_S) for future in others]
        release.set()
        refreshed = refresher.result(timeout=WAIT_S)

    # THEN the others got the cached value without waiting, the refresher the new
    # one, and there was one GetItem in all
    assert stale == ["old"] * 16
    assert refreshed == "new"
    assert dynamodb_calls.names("GetItem") == ["GetItem"]
    # AND the next read is the refreshed value, from the cache
    assert mirror.get("flags/beta") == "new"
    assert dynamodb_calls.names("GetItem") == ["GetItem"]


def test_many_threads_after_expiry_make_one_get_item(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any, clock: Any
):
    # GIVEN a cached value whose TTL is over
    kv.put("k", "v")
    sync()
    mirror = mirror_factory(cache_ttl=1)
    mirror.get("k")
    clock.advance(1)
    dynamodb_calls.calls.clear()

    # WHEN 32 threads read it at once
    start = threading.Barrier(32)

    def read() -> str | None:
        start.wait(WAIT_S)
        value: str | None = mirror.get("k")
        return value

    with ThreadPoolExecutor(max_workers=32) as pool:
        values = list(pool.map(lambda _: read(), range(32)))

    # THEN all got the value and DynamoDB was read once
    assert values == ["v"] * 32
    assert dynamodb_calls.names("GetItem") == ["GetItem"]


def test_first_reads_of_a_key_from_many_threads_share_one_get_item(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any
):
    # GIVEN a key nobody has read, and a first reader held inside its GetItem
    kv.put("k", "v")
    sync()
    mirror = mirror_factory()
    in_get_item, release = threading.Event(), threading.Event()

    def hold(operation: str) -> None:
        in_get_item.set()
        assert release.wait(WAIT_S)

    dynamodb_calls.before.append(hold)

    # WHEN 8 more threads read it meanwhile
    with ThreadPoolExecutor(max_workers=9) as pool:
        first = pool.submit(mirror.get, "k")
        assert in_get_item.wait(WAIT_S)
        others = [pool.submit(mirror.get, "k") for _ in range(8)]
        release.set()
        values = [first.result(WAIT_S)] + [future.result(WAIT_S) for future in others]

    # THEN they waited for the first read's value: one GetItem in all
    assert values == ["v"] * 9
    assert dynamodb_calls.names("GetItem") == ["GetItem"]


def test_dynamodb_failure_serves_the_cached_value_until_max_stale_then_raises(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any, clock: Any
):
    # GIVEN a cached value (TTL 30 s, served stale up to 60 s past it)
    kv.put("flags/beta", "on")
    sync()
    mirror = mirror_factory(cache_ttl=30, max_stale=60)
    assert mirror.get("flags/beta") == "on"

    # WHEN DynamoDB fails from then on
    dynamodb_calls.failing = True

    # THEN reads up to 60 s past the TTL still get the cached value (each one
    # tries DynamoDB again) ...
    clock.advance(30)
    assert mirror.get("flags/beta") == "on"
    clock.advance(59.9)
    assert mirror.get("flags/beta") == "on"
    assert len(dynamodb_calls.names("GetItem")) == 3

    # ... and past that, the failure is raised, with DynamoDB's error as the cause
    clock.advance(0.1)
    with pytest.raises(MirrorUnavailableError, match="Could not read 'flags/beta'") as raised:
        mirror.get("flags/beta")
    assert "Could not connect" in str(raised.value.__cause__)

    # AND once DynamoDB answers again, the key is read afresh
    dynamodb_calls.failing = False
    assert mirror.get("flags/beta") == "on"


def test_failure_with_nothing_cached_raises_at_once(
    aws: Any, mirror_factory: Any, dynamodb_calls: Any
):
    # GIVEN a reader that has cached nothing, and DynamoDB failing
    mirror = mirror_factory()
    dynamodb_calls.failing = True

    # WHEN a key is read THEN the failure is raised
    with pytest.raises(MirrorUnavailableError):
        mirror.get("k")


def test_missing_table_is_reported_as_unavailable(aws: Any, mirror_factory: Any):
    # GIVEN a reader of a table that does not exist
    from kv_sync_reader import KVMirror

    mirror = KVMirror("no-such-table", "ns", client=aws)

    # WHEN it reads THEN the error names the table, with DynamoDB's as the cause
    with pytest.raises(MirrorUnavailableError, match="no-such-table") as raised:
        mirror.get("k")
    assert "ResourceNotFoundException" in str(raised.value.__cause__)


def test_kv_expiration_is_honoured_while_cached(
    kv: FakeNamespace,
    sync: Any,
    mirror_factory: Any,
    dynamodb_calls: Any,
    wall_clock: Any,
):
    # GIVEN a value cached for an hour whose KV expiration is in 10 s
    expiration = int(wall_clock()) + 10
    kv.put("session/abc", "token", expiration=expiration)
    sync()
    mirror = mirror_factory(cache_ttl=3_600)
    assert mirror.get("session/abc") == "token"

    # WHEN the expiration passes (the cache entry has not)
    wall_clock.now = expiration

    # THEN the key reads as absent, without another DynamoDB call
    assert mirror.get("session/abc") is None
    assert mirror.get_entry("session/abc") is None
    assert dynamodb_calls.names("GetItem") == ["GetItem"]


def test_clear_cache_makes_the_next_read_go_to_dynamodb(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any
):
    # GIVEN a cached value
    kv.put("k", "v1")
    sync()
    mirror = mirror_factory()
    assert mirror.get("k") == "v1"

    # WHEN the value changes and the cache is cleared
    kv.put("k", "v2")
    sync()
    mirror.clear_cache()

    # THEN the next read sees the change
    assert mirror.get("k") == "v2"
    assert len(dynamodb_calls.names("GetItem")) == 2


@pytest.mark.parametrize(
    "options", [{"cache_ttl": -1}, {"max_stale": -0.5}], ids=["cache_ttl", "max_stale"]
)
def test_negative_durations_are_refused(aws: Any, mirror_factory: Any, options: dict[str, Any]):
    # WHEN a reader is made with a negative duration THEN it is refused
    with pytest.raises(ValueError, match=">= 0"):
        mirror_factory(**options)
