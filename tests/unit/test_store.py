"""Conditional writes: created_at kept, unchanged values cheap, older syncs never win."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.stub import Stubber

import errors
import store
from cloudflare import KVEntry
from records import build_record
from tests.unit.conftest import NAMESPACE_ID, TABLE, stored_item

T0 = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


def record(value: bytes, at: datetime, metadata=None, expiration=None, key="flag"):
    return build_record(
        KVEntry(key=key, value=value, metadata=metadata, expiration=expiration),
        namespace_id=NAMESPACE_ID,
        namespace_name="flags",
        synced=at,
        ttl_days=30,
    )


def test_new_record_is_written_in_full(aws):
    outcome = store.write_record(TABLE, record(b"v1", T0))

    assert outcome == store.WriteOutcome(changed=True, superseded=False, writes=2)
    item = stored_item(aws, "flag")
    assert item is not None
    assert item["value"] == "v1"
    assert (
        item["created_at"]
        == item["updated_at"]
        == item["synced_at"]
        == "2026-11-21T12:00:00.000000Z"
    )
    assert item["ttl"] == int(T0.timestamp()) + 30 * 86_400


def test_unchanged_value_costs_one_write_and_keeps_updated_at(aws):
    store.write_record(TABLE, record(b"v1", T0))

    outcome = store.write_record(TABLE, record(b"v1", T0 + timedelta(minutes=5)))

    assert outcome == store.WriteOutcome(changed=False, superseded=False, writes=1)
    item = stored_item(aws, "flag")
    assert item is not None
    assert item["updated_at"] == "2026-11-21T12:00:00.000000Z"
    assert item["synced_at"] == "2026-11-21T12:05:00.000000Z"
    assert item["ttl"] == int((T0 + timedelta(minutes=5)).timestamp()) + 30 * 86_400


def test_metadata_change_counts_as_change(aws):
    store.write_record(TABLE, record(b"v1", T0, metadata={"a": 1}))

    outcome = store.write_record(TABLE, record(b"v1", T0 + timedelta(seconds=1), metadata={"a": 2}))

    assert outcome.changed is True
    item = stored_item(aws, "flag")
    assert item is not None and item["metadata"] == {"a": 2}


def test_removed_metadata_and_expiration_do_not_linger(aws):
    store.write_record(TABLE, record(b"v1", T0, metadata={"a": 1}, expiration=1_900_000_000))

    store.write_record(TABLE, record(b"v2", T0 + timedelta(seconds=1)))

    item = stored_item(aws, "flag")
    assert item is not None
    assert "metadata" not in item
    assert "expiration" not in item
    assert item["ttl"] == int((T0 + timedelta(seconds=1)).timestamp()) + 30 * 86_400


def test_older_sync_cannot_overwrite_newer_record(aws):
    # GIVEN a newer sync already stored v2
    store.write_record(TABLE, record(b"v2", T0 + timedelta(seconds=10)))

    # WHEN an older invocation, which read v1 earlier, writes late
    outcome = store.write_record(TABLE, record(b"v1", T0))

    # THEN it is reported as superseded and v2 stays
    assert outcome.superseded is True
    assert outcome.changed is False
    item = stored_item(aws, "flag")
    assert item is not None and item["value"] == "v2"
    assert item["synced_at"] == "2026-11-21T12:00:10.000000Z"


def test_older_sync_of_same_value_does_not_move_synced_at_back(aws):
    store.write_record(TABLE, record(b"v", T0 + timedelta(seconds=10)))

    outcome = store.write_record(TABLE, record(b"v", T0))

    assert outcome.superseded is True
    item = stored_item(aws, "flag")
    assert item is not None and item["synced_at"] == "2026-11-21T12:00:10.000000Z"


def test_created_at_survives_value_changes(aws):
    store.write_record(TABLE, record(b"v1", T0))
    store.write_record(TABLE, record(b"v2", T0 + timedelta(days=1)))

    item = stored_item(aws, "flag")
    assert item is not None
    assert item["created_at"] == "2026-11-21T12:00:00.000000Z"
    assert item["updated_at"] == "2026-11-22T12:00:00.000000Z"


@pytest.mark.parametrize(
    ("code", "error_type", "retryable"),
    [
        ("ProvisionedThroughputExceededException", "STORAGE_ERROR", True),
        ("ThrottlingException", "STORAGE_ERROR", True),
        ("InternalServerError", "STORAGE_ERROR", True),
        ("ResourceNotFoundException", "CONFIGURATION_ERROR", False),
        ("AccessDeniedException", "CONFIGURATION_ERROR", False),
    ],
)
def test_dynamodb_errors_are_typed(aws, code, error_type, retryable):
    client = store.dynamodb_client()
    with Stubber(client) as stubber:
        stubber.add_client_error("update_item", service_error_code=code, http_status_code=400)

        with pytest.raises(errors.SyncError) as raised:
            store.write_record(TABLE, record(b"v", T0))

    assert raised.value.type == error_type
    assert raised.value.is_retryable is retryable


def test_item_too_large_from_dynamodb_is_value_too_large(aws):
    client = store.dynamodb_client()
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "update_item",
            service_error_code="ValidationException",
            service_message="Item size has exceeded the maximum allowed size",
        )
        with pytest.raises(errors.ValueTooLargeError):
            store.write_record(TABLE, record(b"v", T0))
