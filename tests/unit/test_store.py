"""The DynamoDB sink (``kv_sync.store``): version reads and conditional writes.

Every write is conditional on ``synced_at``, the time its content was read from
Cloudflare, so an older read never overwrites a record written from a newer one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber

from kv_sync import errors, runtime, store
from kv_sync.model import KVEntry, Record, StoredState
from kv_sync.records import build_record, partition_key, sort_key
from tests.support.cloudflare import NAMESPACE_ID, PK, TABLE, stored_item

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
DAY = 86_400


def record(
    value: bytes,
    at: datetime,
    metadata: Any = None,
    expiration: int | None = None,
    key: str = "flag",
    ttl_days: int = 30,
) -> Record:
    return build_record(
        KVEntry(key=key, value=value, metadata=metadata, expiration=expiration),
        namespace_id=NAMESPACE_ID,
        namespace_name="flags",
        synced=at,
        ttl_days=ttl_days,
    )


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write(rec: Record) -> bool:
    """Write as the engine does: over the version read just before."""
    seen = store.read_states(TABLE, rec.pk, [rec.sk])[0].get(rec.sk)
    return store.write(TABLE, rec, seen)


def item(aws: Any, key: str = "flag") -> dict[str, Any]:
    found = stored_item(aws, key)
    assert found is not None, f"no record for {key!r}"
    return found


# ------------------------------------------------------------------------- write


def test_new_record_is_written_in_full(aws):
    # GIVEN no record for the key
    # WHEN a record read at T0 is written
    landed = write(record(b"v1", T0, metadata={"a": 1}))

    # THEN it landed with every attribute, and all three timestamps are the read time
    assert landed is True
    stored = item(aws)
    assert stored["value"] == "v1"
    assert stored["metadata"] == {"a": 1}
    assert stored["value_type"] == "string"
    assert stored["content_sha256"] == record(b"v1", T0, metadata={"a": 1}).content_sha256
    assert stored["created_at"] == stored["updated_at"] == stored["synced_at"] == stamp(T0)
    assert stored["ttl"] == int(T0.timestamp()) + 30 * DAY


def test_changed_record_keeps_created_at_and_moves_updated_at(aws):
    # GIVEN a record first stored at T0
    write(record(b"v1", T0))

    # WHEN a change read a day later is written
    later = T0 + timedelta(days=1)
    landed = write(record(b"v2", later))

    # THEN the value and both change timestamps moved, but not created_at
    assert landed is True
    stored = item(aws)
    assert stored["value"] == "v2"
    assert stored["created_at"] == stamp(T0)
    assert stored["updated_at"] == stored["synced_at"] == stamp(later)


def test_metadata_change_is_written(aws):
    # GIVEN a stored record with metadata
    write(record(b"v1", T0, metadata={"a": 1}))

    # WHEN the metadata changed and is written
    write(record(b"v1", T0 + timedelta(seconds=1), metadata={"a": 2}))

    # THEN the record holds the new metadata
    assert item(aws)["metadata"] == {"a": 2}


def test_removed_metadata_and_expiration_do_not_linger(aws):
    # GIVEN a record with metadata and an expiration
    write(record(b"v1", T0, metadata={"a": 1}, expiration=1_900_000_000))

    # WHEN the key's metadata and expiration were removed in KV
    later = T0 + timedelta(seconds=1)
    write(record(b"v2", later))

    # THEN the record no longer has them, and its ttl follows RECORD_TTL_DAYS again
    stored = item(aws)
    assert "metadata" not in stored
    assert "expiration" not in stored
    assert stored["ttl"] == int(later.timestamp()) + 30 * DAY


def test_gzip_marker_does_not_linger_once_the_value_fits(aws):
    # GIVEN a record whose value had to be stored compressed
    big = b"compressible " * 40_000
    write(record(big, T0))
    assert item(aws)["value_encoding"] == "gzip"

    # WHEN the value shrinks
    write(record(b"small", T0 + timedelta(seconds=1)))

    # THEN readers are not told the plain value is gzip
    stored = item(aws)
    assert stored["value"] == "small"
    assert "value_encoding" not in stored


def test_older_read_cannot_overwrite_newer_record(aws):
    # GIVEN a newer sync already stored v2
    write(record(b"v2", T0 + timedelta(seconds=10)))

    # WHEN an older invocation, which read v1 earlier, writes late
    landed = write(record(b"v1", T0))

    # THEN its write did not land and v2 stays, with its own sync time
    assert landed is False
    stored = item(aws)
    assert stored["value"] == "v2"
    assert stored["synced_at"] == stamp(T0 + timedelta(seconds=10))


def test_a_read_as_old_as_the_stored_one_does_not_land(aws):
    # GIVEN a record stored from a read at T0
    write(record(b"v1", T0))

    # WHEN another read made at T0 is written
    # THEN it does not land: only a newer read replaces a record
    assert write(record(b"v2", T0)) is False
    assert item(aws)["value"] == "v1"


# ----------------------------------------------------------------------- refresh


def test_refresh_extends_ttl_and_stamps_synced_at_only(aws):
    # GIVEN a record stored at T0
    write(record(b"v", T0))

    # WHEN the same content, read 20 days later, refreshes it
    later = T0 + timedelta(days=20)
    landed = store.refresh(TABLE, record(b"v", later))

    # THEN ttl and synced_at moved; the value and the change timestamps did not
    assert landed is True
    stored = item(aws)
    assert stored["ttl"] == int(later.timestamp()) + 30 * DAY
    assert stored["synced_at"] == stamp(later)
    assert stored["updated_at"] == stored["created_at"] == stamp(T0)
    assert stored["value"] == "v"


def test_refresh_removes_ttl_when_records_no_longer_expire(aws):
    # GIVEN a record with a ttl, and RECORD_TTL_DAYS since set to 0
    write(record(b"v", T0))

    # WHEN it is refreshed under the new policy
    landed = store.refresh(TABLE, record(b"v", T0 + timedelta(days=1), ttl_days=0))

    # THEN it has no ttl any more: it is kept until its key is deleted
    assert landed is True
    assert "ttl" not in item(aws)


def test_refresh_does_not_land_when_the_content_changed_meanwhile(aws):
    # GIVEN another sync stored new content after our read saw the old one
    write(record(b"old", T0))
    write(record(b"new", T0 + timedelta(seconds=5)))

    # WHEN our refresh of the old content (read later still) arrives
    landed = store.refresh(TABLE, record(b"old", T0 + timedelta(seconds=9)))

    # THEN it does not land: the stored content is not what we compared with
    assert landed is False
    stored = item(aws)
    assert stored["value"] == "new"
    assert stored["synced_at"] == stamp(T0 + timedelta(seconds=5))


def test_refresh_from_an_older_read_does_not_land(aws):
    # GIVEN a record stored from a newer read
    write(record(b"v", T0 + timedelta(seconds=10)))

    # WHEN an older read refreshes it
    landed = store.refresh(TABLE, record(b"v", T0))

    # THEN it does not land, and synced_at stays
    assert landed is False
    assert item(aws)["synced_at"] == stamp(T0 + timedelta(seconds=10))


def test_refresh_never_creates_a_record(aws):
    # GIVEN no record (deleted since it was read)
    # WHEN a refresh arrives
    landed = store.refresh(TABLE, record(b"v", T0))

    # THEN nothing is created: a partial record would lack the value
    assert landed is False
    assert stored_item(aws, "flag") is None


# ------------------------------------------------------------------------ delete


def test_delete_if_older_removes_a_record_synced_before_the_key_was_seen_missing(aws):
    # GIVEN a record synced before the key was seen missing
    write(record(b"v", T0))

    # WHEN it is deleted if older
    deleted = store.delete_if_older(TABLE, PK, sort_key("flag"), stamp(T0 + timedelta(seconds=1)))

    # THEN it is gone
    assert deleted is True
    assert stored_item(aws, "flag") is None


def test_delete_if_older_keeps_a_record_synced_after_the_key_was_seen_missing(aws):
    # GIVEN the key was re-created and synced after this run saw it missing
    write(record(b"back", T0 + timedelta(seconds=5)))

    # WHEN the run's delete arrives
    deleted = store.delete_if_older(TABLE, PK, sort_key("flag"), stamp(T0))

    # THEN the newer record is kept
    assert deleted is False
    assert item(aws)["value"] == "back"


def test_delete_if_older_of_an_absent_record_deletes_nothing(aws):
    # GIVEN no record
    # WHEN it is deleted if older
    # THEN nothing was deleted
    assert store.delete_if_older(TABLE, PK, sort_key("flag"), stamp(T0)) is False


# -------------------------------------------------------------------------- reads


def test_read_states_returns_the_version_of_each_stored_record(aws):
    # GIVEN two stored records, one with an expiration, and one key never stored
    a, b = record(b"a", T0, key="a"), record(b"b", T0, key="b", expiration=1_900_000_000)
    write(a)
    write(b)

    # WHEN their versions are read
    states, calls = store.read_states(TABLE, PK, [sort_key("a"), sort_key("b"), sort_key("c")])

    # THEN one call returned what a comparison needs; the absent key is absent
    assert calls == 1
    assert states == {
        sk: StoredState(rec.content_sha256, rec.synced_at, rec.ttl, created_at=rec.synced_at)
        for sk, rec in (("KEY#a", a), ("KEY#b", b))
    }


def test_read_states_of_no_keys_calls_nothing(aws):
    # GIVEN no keys
    # WHEN their versions are read
    # THEN nothing is called
    assert store.read_states(TABLE, PK, []) == ({}, 0)


def test_read_states_asks_again_for_keys_dynamodb_left_unprocessed(no_sleep):
    # GIVEN DynamoDB (throttled) answers the first batch read with unprocessed keys
    client = runtime.client("dynamodb")
    key = {"pk": {"S": PK}, "sk": {"S": "KEY#b"}}
    version = {"content_sha256": {"S": "h"}, "synced_at": {"S": stamp(T0)}}
    with Stubber(client) as stubber:
        stubber.add_response(
            "batch_get_item",
            {
                "Responses": {TABLE: [{"sk": {"S": "KEY#a"}, **version}]},
                "UnprocessedKeys": {TABLE: {"Keys": [key]}},
            },
        )
        stubber.add_response(
            "batch_get_item",
            {"Responses": {TABLE: [{"sk": {"S": "KEY#b"}, **version, "ttl": {"N": "5"}}]}},
        )

        # WHEN the versions are read
        states, calls = store.read_states(TABLE, PK, ["KEY#a", "KEY#b"])

    # THEN the unprocessed key was read in a second call, after a backoff
    assert calls == 2
    assert states["KEY#a"] == StoredState(content_sha256="h", synced_at=stamp(T0), ttl=None)
    assert states["KEY#b"] == StoredState(content_sha256="h", synced_at=stamp(T0), ttl=5)
    assert len(no_sleep) == 1


def test_read_states_that_stay_unprocessed_are_a_retryable_storage_error(no_sleep):
    # GIVEN DynamoDB leaving the keys unprocessed at every attempt
    client = runtime.client("dynamodb")
    unprocessed = {TABLE: {"Keys": [{"pk": {"S": PK}, "sk": {"S": "KEY#a"}}]}}
    with Stubber(client) as stubber:
        for _ in range(10):
            stubber.add_response(
                "batch_get_item", {"Responses": {}, "UnprocessedKeys": unprocessed}
            )

        # WHEN their versions are read
        with pytest.raises(errors.StorageError) as raised:
            store.read_states(TABLE, PK, ["KEY#a"])

    # THEN it gives up as a retryable STORAGE_ERROR
    assert raised.value.is_retryable is True
    assert "unprocessed" in raised.value.message


def test_query_states_reads_exactly_the_inclusive_range(aws):
    # GIVEN records for b, c, d and e, and one of another namespace
    for key in "bcde":
        write(record(key.encode(), T0, key=key))
    other = build_record(
        KVEntry("c", b"x", None, None),
        namespace_id="other-namespace",
        namespace_name="other",
        synced=T0,
        ttl_days=30,
    )
    write(other)

    # WHEN the range [KEY#c, KEY#d] is read
    states, calls = store.query_states(TABLE, PK, sort_key("c"), sort_key("d"))

    # THEN both ends are included, nothing outside, and only this namespace
    assert sorted(states) == ["KEY#c", "KEY#d"]
    assert calls == 1
    assert partition_key("other-namespace") != PK


def test_query_states_follows_dynamodbs_pages():
    # GIVEN a query answered in two pages
    client = runtime.client("dynamodb")
    version = {"content_sha256": {"S": "h"}, "synced_at": {"S": stamp(T0)}}
    last = {"pk": {"S": PK}, "sk": {"S": "KEY#a"}}
    with Stubber(client) as stubber:
        stubber.add_response(
            "query", {"Items": [{"sk": {"S": "KEY#a"}, **version}], "LastEvaluatedKey": last}
        )
        stubber.add_response("query", {"Items": [{"sk": {"S": "KEY#b"}, **version}]})

        # WHEN the range is read
        states, calls = store.query_states(TABLE, PK, "KEY#", "KEY$")

    # THEN both pages were read
    assert sorted(states) == ["KEY#a", "KEY#b"]
    assert calls == 2


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "error_type", "retryable"),
    [
        ("ProvisionedThroughputExceededException", "STORAGE_ERROR", True),
        ("ThrottlingException", "STORAGE_ERROR", True),
        ("RequestLimitExceeded", "STORAGE_ERROR", True),
        ("InternalServerError", "STORAGE_ERROR", True),
        ("ServiceUnavailable", "STORAGE_ERROR", True),
        ("SerializationException", "STORAGE_ERROR", False),
        ("ResourceNotFoundException", "CONFIGURATION_ERROR", False),
        ("AccessDeniedException", "CONFIGURATION_ERROR", False),
    ],
)
@pytest.mark.parametrize("operation", ["write", "delete", "read", "query"])
def test_dynamodb_errors_are_typed(code, error_type, retryable, operation):
    # GIVEN DynamoDB answers the call with this error
    method = {
        "write": "put_item",
        "delete": "delete_item",
        "read": "batch_get_item",
        "query": "query",
    }[operation]
    calls: dict[str, Callable[[], object]] = {
        "write": lambda: store.write(TABLE, record(b"v", T0), None),
        "delete": lambda: store.delete_if_older(TABLE, PK, "KEY#flag", stamp(T0)),
        "read": lambda: store.read_states(TABLE, PK, ["KEY#flag"]),
        "query": lambda: store.query_states(TABLE, PK, "KEY#", "KEY$"),
    }
    with Stubber(runtime.client("dynamodb")) as stubber:
        stubber.add_client_error(method, service_error_code=code, http_status_code=400)

        # WHEN the store makes it
        with pytest.raises(errors.SyncError) as raised:
            calls[operation]()

    # THEN the error type and retryability follow the DynamoDB error code
    assert raised.value.type == error_type
    assert raised.value.is_retryable is retryable
    assert code in raised.value.message or TABLE in raised.value.message


def test_missing_table_is_named_in_the_configuration_error(aws):
    # GIVEN a table that does not exist
    with pytest.raises(errors.ConfigurationError) as raised:
        store.write("no-such-table", record(b"v", T0), None)

    # WHEN a record is written to it
    # THEN the configuration error names the table and the variable
    assert "'no-such-table'" in raised.value.message
    assert "DYNAMODB_TABLE_NAME" in raised.value.message


def test_item_too_large_from_dynamodb_is_value_too_large():
    # GIVEN DynamoDB refusing the item as too large
    # WHEN the record is written
    # THEN it is VALUE_TOO_LARGE
    with Stubber(runtime.client("dynamodb")) as stubber:
        stubber.add_client_error(
            "put_item",
            service_error_code="ValidationException",
            service_message="Item size has exceeded the maximum allowed size",
        )
        with pytest.raises(errors.ValueTooLargeError):
            store.write(TABLE, record(b"v", T0), None)
