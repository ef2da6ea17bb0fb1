"""One write policy for every selector, through the handler (moto + ``responses``).

Whether a key arrives by ``key_name``, ``key_names``, ``prefix`` or ``all``, the
same KV entry gives the same record, and the same rules decide what is written:
new or changed content is one conditional ``PutItem``; unchanged content is
not written (except for an ``UpdateItem`` extending a ``ttl`` within half of
``RECORD_TTL_DAYS``); a record stored from a newer read wins.

DynamoDB calls are told apart by the item they concern: the records, and the lease
a multi-key run takes (``PutItem``) and releases (``DeleteItem``) around them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from kv_sync import runtime
from kv_sync.handler import lambda_handler
from local.lambda_context import LambdaContext
from tests.support.cloudflare import PK, TABLE, FakeNamespace, stored_item

KEY = "flags/beta"
DAY = 86_400
SELECTORS: dict[str, dict[str, Any]] = {
    "key_name": {"key_name": KEY},
    "key_names": {"key_names": [KEY]},
    "prefix": {"prefix": "flags/"},
    "all": {"all": True},
}
READ_CALL = {
    "key_name": "BatchGetItem",
    "key_names": "BatchGetItem",
    "prefix": "Query",
    "all": "Query",
}
# The lease of a multi-key run: taken before its first page, released after its last.
LEASE_CALLS = {
    "key_name": [],
    "key_names": ["PutItem", "DeleteItem"],
    "prefix": ["PutItem", "DeleteItem"],
    "all": ["PutItem", "DeleteItem"],
}
TIMESTAMPS = ("created_at", "updated_at", "synced_at")
WRITE_CALLS = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}

by_selector = pytest.mark.parametrize("selector", list(SELECTORS))


class Sync:
    """Invokes the function with one selector and reads what it did to ``KEY``."""

    def __init__(self, selector: str, aws: Any, calls: list[tuple[str, str]]) -> None:
        self.selector = selector
        self.aws = aws
        self.calls = calls

    def __call__(self, **options: Any) -> dict[str, Any]:
        """Sync ``KEY`` (and only it: the namespace holds nothing else)."""
        self.calls.clear()
        reply: dict[str, Any] = lambda_handler(
            {**SELECTORS[self.selector], **options}, LambdaContext()
        )
        return reply

    def item(self) -> dict[str, Any]:
        found = stored_item(self.aws, KEY)
        assert found is not None, "no record stored"
        return found

    def record_calls(self) -> list[str]:
        """The DynamoDB calls of the last sync that read or wrote records."""
        return [operation for operation, item in self.calls if item == "record"]

    def lease_calls(self) -> list[str]:
        """The DynamoDB calls of the last sync on the namespace's lease."""
        return [operation for operation, item in self.calls if item == "lease"]

    def writes(self) -> list[str]:
        """The DynamoDB writes of records in the last sync."""
        return [call for call in self.record_calls() if call in WRITE_CALLS]

    def set_stored(self, **attributes: Any) -> None:
        """Change the stored record behind the function's back (another sync, time passing)."""
        names = {f"#n{i}": name for i, name in enumerate(attributes)}
        values = {
            f":v{i}": {"N": str(value)} if isinstance(value, int) else {"S": value}
            for i, value in enumerate(attributes.values())
        }
        self.aws.update_item(
            TableName=TABLE,
            Key={"pk": {"S": PK}, "sk": {"S": f"KEY#{KEY}"}},
            UpdateExpression="SET " + ", ".join(f"#n{i} = :v{i}" for i in range(len(names))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


def action(reply: dict[str, Any]) -> str:
    """What the sync did with ``KEY``, from the reply of either shape."""
    statistics = reply["statistics"]
    if "records_written" in statistics:
        counts = {
            name: statistics[f"records_{name}"]
            for name in ("written", "unchanged", "superseded", "deleted", "failed")
        }
        done = [name for name, count in counts.items() if count]
        assert len(done) <= 1, counts
        return done[0] if done else "nothing"
    if not reply["success"]:
        return "failed"
    record = reply["data"]["record"]
    if record["superseded"]:
        return "superseded"
    return "written" if record["changed"] else "unchanged"


def epoch(timestamp: str) -> int:
    return int(datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp())


def without_times(item: dict[str, Any]) -> dict[str, Any]:
    """A record minus what depends on when it was synced."""
    timeless = {name: value for name, value in item.items() if name not in TIMESTAMPS}
    if "expiration" not in item:
        timeless.pop("ttl", None)
    return timeless


@pytest.fixture
def selector() -> str:
    """The selector a test syncs by (``by_selector`` runs a test with each)."""
    return "key_name"


@pytest.fixture
def sync(aws, kv: FakeNamespace, dynamodb_items, selector) -> Sync:
    """``KEY``, holding a JSON flag with metadata, synced by ``selector``."""
    kv.put(KEY, '{"enabled": true}', metadata={"owner": "web"})
    return Sync(selector, aws, dynamodb_items)


@pytest.fixture
def another_sync_first(aws) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """Make another invocation store ``KEY`` just before the function's next ``operation``
    on a record (not on the lease)."""
    events = runtime.client("dynamodb").meta.events
    hooks: list[tuple[str, Any]] = []

    def arrange(operation: str, attributes: dict[str, Any]) -> None:
        done: list[bool] = []

        def store_newer(params: dict[str, Any], **_: Any) -> None:
            sk = (params.get("Item") or params.get("Key") or {})["sk"]["S"]
            if done or not sk.startswith("KEY#"):
                return
            done.append(True)
            item = {"pk": {"S": PK}, "sk": {"S": f"KEY#{KEY}"}, "key": {"S": KEY}}
            item |= {name: {"S": value} for name, value in attributes.items()}
            aws.put_item(TableName=TABLE, Item=item)

        event = f"provide-client-params.dynamodb.{operation}"
        events.register(event, store_newer)
        hooks.append((event, store_newer))

    yield arrange
    for event, hook in hooks:
        events.unregister(event, hook)


# -------------------------------------------------------------- the same record


@pytest.mark.parametrize(
    ("value", "metadata", "expiration"),
    [
        ('{"enabled": true, "pct": 12.5}', {"owner": "web", "weights": [0.25, 1]}, 1_900_000_000),
        ("https://essentials.example.com", None, None),
        (b"\x89PNG\r\n\x1a\n\xff", {"kind": "png"}, None),
        ("essentials " * 50_000, None, None),
    ],
    ids=["json-metadata-expiration", "text", "binary", "gzip"],
)
def test_every_selector_stores_the_same_record(aws, kv, value, metadata, expiration):
    # GIVEN one KV entry
    kv.put(KEY, value, metadata=metadata, expiration=expiration)
    items: dict[str, dict[str, Any]] = {}

    for selector, event in SELECTORS.items():
        # WHEN it is synced into an empty table by each selector in turn
        aws.delete_item(TableName=TABLE, Key={"pk": {"S": PK}, "sk": {"S": f"KEY#{KEY}"}})
        assert lambda_handler(event, LambdaContext())["success"] is True
        item = stored_item(aws, KEY)
        assert item is not None
        items[selector] = item

    # THEN every selector stored identical attributes, apart from when it ran
    reference = without_times(items["key_name"])
    for selector, item in items.items():
        assert without_times(item) == reference, selector
        # AND a first sync stamps all three timestamps with its read time
        assert item["created_at"] == item["updated_at"] == item["synced_at"], selector
        expected_ttl = expiration if expiration is not None else epoch(item["synced_at"]) + 30 * DAY
        assert item["ttl"] == expected_ttl, selector


# ------------------------------------------------------------------ first sync


@by_selector
def test_first_sync_is_one_read_and_one_conditional_put(sync, selector):
    # GIVEN a key never synced
    # WHEN it is synced
    reply = sync()

    # THEN its record was written with one PutItem after one read of the stored versions
    assert action(reply) == "written"
    assert reply["statistics"]["dynamodb_writes"] == 1
    assert sync.record_calls() == [READ_CALL[selector], "PutItem"]
    # AND a multi-key run took the namespace's lease before, and released it after
    assert sync.lease_calls() == LEASE_CALLS[selector]
    item = sync.item()
    assert item["value"] == '{"enabled": true}'
    assert item["created_at"] == item["updated_at"] == item["synced_at"]
    assert item["ttl"] == epoch(item["synced_at"]) + 30 * DAY


# ------------------------------------------------------------------- unchanged


@by_selector
def test_unchanged_resync_writes_nothing(sync, selector):
    # GIVEN a key synced once
    sync()
    before = sync.item()

    # WHEN it is synced again, unchanged
    reply = sync()

    # THEN it is reported unchanged after one read and no write of a record at all
    assert action(reply) == "unchanged"
    assert reply["statistics"]["dynamodb_writes"] == 0
    assert sync.record_calls() == [READ_CALL[selector]]
    # AND the only writes were a multi-key run's lease, taken and released
    assert sync.lease_calls() == LEASE_CALLS[selector]
    # AND the record is untouched: synced_at is not refreshed either
    assert sync.item() == before


# --------------------------------------------------------------------- changed


@by_selector
@pytest.mark.parametrize(
    "change",
    [
        {"value": '{"enabled": false}'},
        {"metadata": {"owner": "api"}},
        {"expiration": 1_900_000_000},
    ],
    ids=["value", "metadata", "expiration"],
)
def test_changed_content_is_rewritten_keeping_created_at(sync, kv, selector, change):
    # GIVEN a key synced once, then changed in KV
    sync()
    before = sync.item()
    entry = kv.entries[KEY]
    kv.put(
        KEY,
        change.get("value", entry.value),
        metadata=change.get("metadata", entry.metadata),
        expiration=change.get("expiration", entry.expiration),
    )

    # WHEN it is synced again
    reply = sync()

    # THEN the change is written with one conditional put
    assert action(reply) == "written"
    assert reply["statistics"]["dynamodb_writes"] == 1
    assert sync.writes() == ["PutItem"]
    # AND created_at stays, while updated_at and synced_at are this read's time
    after = sync.item()
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] == after["synced_at"] > before["synced_at"]
    for name, value in change.items():
        assert after[name] == value


# ------------------------------------------------------------------------ ttl


@by_selector
def test_ttl_is_extended_once_within_half_of_record_ttl_days(sync, selector):
    # GIVEN an unchanged key whose record's ttl has only 10 of its 30 days left
    sync()
    before = sync.item()
    sync.set_stored(ttl=int(time.time()) + 10 * DAY)

    # WHEN it is synced again
    reply = sync()

    # THEN it is still "unchanged", but one conditional update extended its ttl
    assert action(reply) == "unchanged"
    assert reply["statistics"]["dynamodb_writes"] == 1
    assert sync.writes() == ["UpdateItem"]
    after = sync.item()
    assert after["ttl"] == epoch(after["synced_at"]) + 30 * DAY
    # AND synced_at moved (the sync wrote the record), while the content and
    # updated_at/created_at did not
    assert after["synced_at"] > before["synced_at"]
    assert after["updated_at"] == before["updated_at"]
    assert after["created_at"] == before["created_at"]
    assert after["value"] == before["value"]


@by_selector
def test_ttl_is_left_alone_with_more_than_half_of_it_left(sync, selector):
    # GIVEN an unchanged key whose record's ttl still has 20 of its 30 days
    sync()
    sync.set_stored(ttl=int(time.time()) + 20 * DAY)
    before = sync.item()

    # WHEN it is synced again
    reply = sync()

    # THEN nothing is written
    assert action(reply) == "unchanged"
    assert reply["statistics"]["dynamodb_writes"] == 0
    assert sync.writes() == []
    assert sync.item() == before


@by_selector
def test_ttl_goes_when_record_ttl_days_becomes_zero(sync, selector, monkeypatch):
    # GIVEN an unchanged key stored with a ttl
    sync()

    # WHEN it is synced again after RECORD_TTL_DAYS was set to 0
    monkeypatch.setenv("RECORD_TTL_DAYS", "0")
    reply = sync()

    # THEN one update removed the ttl: the record is kept until its key is gone
    assert action(reply) == "unchanged"
    assert reply["statistics"]["dynamodb_writes"] == 1
    assert "ttl" not in sync.item()


@by_selector
def test_ttl_comes_back_when_record_ttl_days_is_set_again(sync, selector, monkeypatch):
    # GIVEN an unchanged key stored while RECORD_TTL_DAYS was 0
    monkeypatch.setenv("RECORD_TTL_DAYS", "0")
    sync()
    assert "ttl" not in sync.item()

    # WHEN it is synced again with RECORD_TTL_DAYS=7
    monkeypatch.setenv("RECORD_TTL_DAYS", "7")
    reply = sync()

    # THEN one update gave it a 7-day ttl
    assert action(reply) == "unchanged"
    assert reply["statistics"]["dynamodb_writes"] == 1
    item = sync.item()
    assert item["ttl"] == epoch(item["synced_at"]) + 7 * DAY


# --------------------------------------------------------------- newer reads win


@by_selector
def test_change_is_superseded_when_the_stored_record_is_from_a_newer_read(sync, kv, selector):
    # GIVEN a record stored by a sync whose read is newer than the one about to happen
    sync()
    sync.set_stored(synced_at="2999-01-01T00:00:00.000000Z")
    before = sync.item()
    kv.put(KEY, "an older view of the key")

    # WHEN this sync reads the key and compares
    reply = sync()

    # THEN its result is discarded as superseded: nothing written, not an error
    assert action(reply) == "superseded"
    assert reply["success"] is True
    assert reply["statistics"]["dynamodb_writes"] == 0
    assert sync.writes() == []
    assert sync.item() == before


def test_superseded_single_key_reply_says_so(sync, kv):
    # GIVEN a key_name sync whose read is older than the stored record's
    sync()
    sync.set_stored(synced_at="2999-01-01T00:00:00.000000Z")
    kv.put(KEY, "an older view of the key")

    # WHEN it syncs
    reply = sync()

    # THEN the reply says its result was discarded, not stored
    assert reply["data"]["message"] == (
        f"A newer sync already stored '{KEY}'; this result was discarded"
    )
    assert reply["data"]["record"]["superseded"] is True
    assert reply["data"]["record"]["changed"] is False
    assert reply["data"]["processing_summary"]["record_stored"] is False


@by_selector
def test_an_older_read_never_overwrites_a_record_written_meanwhile(
    sync, kv, selector, another_sync_first
):
    # GIVEN a key synced once and changed in KV
    sync()
    kv.put(KEY, "v2 as this sync reads it")

    # AND another invocation, which read the key later, stores it between this
    # sync's read of the stored versions and its write
    another_sync_first(
        "PutItem",
        {"value": "v3 from a newer read", "synced_at": "2999-01-01T00:00:00.000000Z"},
    )

    # WHEN this sync writes
    reply = sync()

    # THEN its write did not land: the newer record stays, and the key is superseded
    assert action(reply) == "superseded"
    assert sync.item()["value"] == "v3 from a newer read"
    assert sync.item()["synced_at"] == "2999-01-01T00:00:00.000000Z"


@by_selector
def test_a_ttl_extension_never_lands_over_a_record_written_meanwhile(
    sync, selector, another_sync_first
):
    # GIVEN an unchanged key whose ttl is due for extension
    sync()
    sync.set_stored(ttl=int(time.time()) + 5 * DAY)

    # AND another invocation stores new content just before the extension
    another_sync_first(
        "UpdateItem",
        {
            "value": "new content",
            "content_sha256": "other",
            "synced_at": "2999-01-01T00:00:00.000000Z",
        },
    )

    # WHEN the extension is written
    reply = sync()

    # THEN it did not land over the newer record
    assert action(reply) == "superseded"
    assert sync.item()["value"] == "new content"


# ------------------------------------------------------------------- deletions


@by_selector
def test_a_key_gone_from_kv_has_its_record_deleted_with_delete_missing(sync, kv, selector):
    # GIVEN a stored key since deleted in KV
    sync()
    kv.delete(KEY)

    # WHEN it is synced with delete_missing (forced: it is the selection's only
    # record, which the deletion guard keeps by default)
    reply = sync(delete_missing=True, force_delete=True)

    # THEN its record is deleted with one conditional delete
    assert reply["statistics"]["dynamodb_writes"] == 1
    assert sync.writes() == ["DeleteItem"]
    assert stored_item(sync.aws, KEY) is None


@by_selector
def test_a_key_gone_from_kv_keeps_its_record_without_delete_missing(sync, kv, selector):
    # GIVEN a stored key since deleted in KV
    sync()
    before = sync.item()
    kv.delete(KEY)

    # WHEN it is synced without delete_missing
    reply = sync()

    # THEN the record is left as it is
    assert reply["statistics"]["dynamodb_writes"] == 0
    assert sync.writes() == []
    assert sync.item() == before
    # a named key is reported missing; a listing simply no longer shows it
    named = selector in ("key_name", "key_names")
    assert action(reply) == ("failed" if named else "nothing")


@by_selector
def test_a_record_synced_again_after_the_key_was_seen_missing_is_kept(
    sync, kv, selector, another_sync_first
):
    # GIVEN a stored key deleted in KV, and re-created and synced by another
    # invocation right after this one saw it missing
    sync()
    kv.delete(KEY)
    another_sync_first(
        "DeleteItem", {"value": "re-created", "synced_at": "2999-01-01T00:00:00.000000Z"}
    )

    # WHEN this sync's delete arrives (forced past the deletion guard)
    reply = sync(delete_missing=True, force_delete=True)

    # THEN the newer record is kept, and not counted as deleted
    assert sync.item()["value"] == "re-created"
    if "records_deleted" in reply["statistics"]:
        assert reply["statistics"]["records_deleted"] == 0
    else:
        assert "its DynamoDB record was deleted" not in reply["error"]["message"]
