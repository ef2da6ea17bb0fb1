"""The one write policy every selector follows (``kv_sync.plan.Planner.decide``).

``decide`` is pure: given what Cloudflare returned for a key, the stored
record's version and the read time, it returns the key's outcome when no write
is needed, or the write (a ``Job``) that is.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kv_sync.errors import ApiError, NotFoundError
from kv_sync.model import Action, KeyOutcome, KVEntry, Record, StoredState
from kv_sync.plan import Job, Planner
from kv_sync.records import build_record
from tests.support.cloudflare import NAMESPACE_ID, NAMESPACE_NAME

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
KEY = "flags/beta"


def planner(**overrides: Any) -> Planner:
    settings: dict[str, Any] = {
        "namespace_id": NAMESPACE_ID,
        "namespace_name": NAMESPACE_NAME,
        "ttl_days": 30,
        "delete_missing": False,
        "named": True,
    }
    return Planner(**{**settings, **overrides})


def entry(value: bytes = b'{"on": true}', metadata: Any = None, expiration: int | None = None):
    return KVEntry(key=KEY, value=value, metadata=metadata, expiration=expiration)


def record_of(kv: KVEntry, at: datetime, ttl_days: int = 30) -> Record:
    return build_record(
        kv, namespace_id=NAMESPACE_ID, namespace_name=NAMESPACE_NAME, synced=at, ttl_days=ttl_days
    )


def stored(kv: KVEntry, at: datetime, ttl_days: int = 30) -> StoredState:
    """The version a record of ``kv`` stored at ``at`` has."""
    record = record_of(kv, at, ttl_days)
    return StoredState(
        content_sha256=record.content_sha256, synced_at=record.synced_at, ttl=record.ttl
    )


def job(decided: KeyOutcome | Job) -> Job:
    assert isinstance(decided, Job), f"expected a write, got {decided}"
    return decided


def outcome(decided: KeyOutcome | Job) -> KeyOutcome:
    assert isinstance(decided, KeyOutcome), f"expected no write, got {decided}"
    return decided


# ------------------------------------------------------------------ new and changed


def test_a_new_key_is_written_in_full():
    # GIVEN a key with no stored record
    kv = entry(metadata={"owner": "web"})

    # WHEN the policy decides
    decided = job(planner().decide(KEY, kv, None, NOW))

    # THEN the whole record, read now, is written
    assert decided.action is Action.WRITTEN
    assert decided.key == KEY
    assert decided.record == record_of(kv, NOW)


@pytest.mark.parametrize(
    "change",
    [
        {"value": b'{"on": false}'},
        {"metadata": {"owner": "api"}},
        {"expiration": 1_900_000_000},
    ],
    ids=["value", "metadata", "expiration"],
)
def test_a_changed_key_is_written_in_full(change):
    # GIVEN a record stored an hour ago, and the key since changed in KV
    before = entry()
    after = entry(**{"value": before.value, "metadata": None, **change})

    # WHEN the policy decides
    decided = job(planner().decide(KEY, after, stored(before, NOW - timedelta(hours=1)), NOW))

    # THEN the new content is written
    assert decided.action is Action.WRITTEN
    assert decided.record == record_of(after, NOW)


@pytest.mark.parametrize("newer_by", [timedelta(seconds=1), timedelta(0)], ids=["newer", "same"])
def test_a_change_read_before_the_stored_record_is_superseded(newer_by):
    # GIVEN another sync stored a read made at (or after) this one's
    kv = entry(b"older read")
    state = stored(entry(b"newer read"), NOW + newer_by)

    # WHEN the policy decides on this older read
    decided = outcome(planner().decide(KEY, kv, state, NOW))

    # THEN nothing is written: this result is discarded as superseded
    assert decided.action is Action.SUPERSEDED
    assert decided.error is None
    assert (decided.value_type, decided.size_bytes) == ("string", len(b"older read"))


# ------------------------------------------------------------------------ unchanged


def test_an_unchanged_key_is_not_written():
    # GIVEN a record of the same content stored a day ago
    kv = entry(metadata={"owner": "web"})

    # WHEN the policy decides
    decided = outcome(planner().decide(KEY, kv, stored(kv, NOW - DAY), NOW))

    # THEN nothing is written, and the outcome still describes the value
    assert decided.action is Action.UNCHANGED
    assert (decided.value_type, decided.size_bytes) == ("json", len(kv.value))


def test_an_unchanged_key_stored_by_a_newer_read_is_unchanged_not_superseded():
    # GIVEN the same content stored by a sync that read after this one
    kv = entry()

    # WHEN the policy decides
    decided = outcome(planner().decide(KEY, kv, stored(kv, NOW + DAY), NOW))

    # THEN the key is simply unchanged
    assert decided.action is Action.UNCHANGED


@pytest.mark.parametrize(
    ("stored_days_ago", "extended"),
    [(1, False), (14, False), (15, False), (16, True), (29, True), (45, True)],
)
def test_an_unchanged_keys_ttl_is_extended_once_within_half_of_ttl_days(stored_days_ago, extended):
    # GIVEN an unchanged key whose record (30-day ttl) was stored some days ago
    kv = entry()
    state = stored(kv, NOW - stored_days_ago * DAY)

    # WHEN the policy decides
    decided = planner(ttl_days=30).decide(KEY, kv, state, NOW)

    # THEN its ttl is extended only once less than 15 days of it are left
    if extended:
        extension = job(decided)
        assert extension.action is Action.UNCHANGED
        assert extension.record == record_of(kv, NOW)
        assert extension.record is not None
        assert extension.record.ttl == int((NOW + 30 * DAY).timestamp())
    else:
        assert outcome(decided).action is Action.UNCHANGED


def test_ttl_is_extended_one_second_past_half_but_not_at_half():
    # GIVEN two stored versions whose ttl has exactly 15 days left, and 1 s less
    kv = entry()
    at_half = StoredState(
        content_sha256=record_of(kv, NOW).content_sha256,
        synced_at="2026-11-01T00:00:00.000000Z",
        ttl=int((NOW + 15 * DAY).timestamp()),
    )
    past_half = StoredState(
        at_half.content_sha256, at_half.synced_at, int((NOW + 15 * DAY).timestamp()) - 1
    )

    # WHEN the policy decides for each
    # THEN only the one with less than half of RECORD_TTL_DAYS left is extended
    assert isinstance(planner().decide(KEY, kv, at_half, NOW), KeyOutcome)
    assert isinstance(planner().decide(KEY, kv, past_half, NOW), Job)


def test_ttl_is_removed_when_records_no_longer_expire():
    # GIVEN an unchanged key stored with a ttl, and RECORD_TTL_DAYS now 0
    kv = entry()

    # WHEN the policy decides
    extension = job(planner(ttl_days=0).decide(KEY, kv, stored(kv, NOW - DAY), NOW))

    # THEN the record is rewritten without a ttl
    assert extension.action is Action.UNCHANGED
    assert extension.record is not None
    assert extension.record.ttl is None


def test_ttl_is_added_when_records_start_to_expire():
    # GIVEN an unchanged key stored without a ttl (RECORD_TTL_DAYS was 0), now 30
    kv = entry()

    # WHEN the policy decides
    extension = job(planner(ttl_days=30).decide(KEY, kv, stored(kv, NOW - DAY, ttl_days=0), NOW))

    # THEN the record gets its ttl
    assert extension.record is not None
    assert extension.record.ttl == int((NOW + 30 * DAY).timestamp())


def test_an_expiring_key_keeps_its_expiration_as_ttl_without_writes():
    # GIVEN an unchanged key that expires in KV in two days (well within half of 30 days)
    kv = entry(expiration=int((NOW + 2 * DAY).timestamp()))

    # WHEN the policy decides
    decided = planner().decide(KEY, kv, stored(kv, NOW - 20 * DAY), NOW)

    # THEN nothing is written: its ttl is its KV expiration, which did not move
    assert outcome(decided).action is Action.UNCHANGED


def test_a_stored_ttl_that_is_not_the_expiration_is_corrected():
    # GIVEN an unchanged expiring key whose stored ttl is not its expiration
    kv = entry(expiration=1_900_000_000)
    good = stored(kv, NOW - DAY)
    state = StoredState(good.content_sha256, good.synced_at, ttl=1_800_000_000)

    # WHEN the policy decides
    extension = job(planner().decide(KEY, kv, state, NOW))

    # THEN the ttl is set to the expiration
    assert extension.record is not None
    assert extension.record.ttl == 1_900_000_000


# -------------------------------------------------------------------------- failures


def test_a_key_cloudflare_could_not_read_fails_with_that_error():
    # GIVEN a key whose read failed on its own
    error = ApiError("Cloudflare API error (HTTP 400)")

    # WHEN the policy decides
    decided = outcome(planner().decide(KEY, error, None, NOW))

    # THEN the key fails with that very error
    assert decided.action is Action.FAILED
    assert decided.error is error


def test_a_value_too_large_for_dynamodb_fails_without_a_write():
    # GIVEN 450 KB of random bytes, which gzip cannot shrink below 400 KB
    kv = entry(random.Random(0).randbytes(450_000))

    # WHEN the policy decides
    decided = outcome(planner().decide(KEY, kv, None, NOW))

    # THEN the key fails as VALUE_TOO_LARGE
    assert decided.action is Action.FAILED
    assert decided.error is not None
    assert decided.error.type == "VALUE_TOO_LARGE"


# --------------------------------------------------------------------- gone from KV


def test_a_named_key_gone_from_kv_is_not_found_without_delete_missing():
    # GIVEN a key asked for by name that KV does not have, its record still stored
    state = stored(entry(), NOW - DAY)

    # WHEN the policy decides without delete_missing
    decided = outcome(planner(named=True, delete_missing=False).decide(KEY, None, state, NOW))

    # THEN it fails as NOT_FOUND, and the record is left alone
    assert decided.action is Action.FAILED
    assert isinstance(decided.error, NotFoundError)
    assert decided.error.message == f"Key '{KEY}' does not exist in the KV namespace"


@pytest.mark.parametrize("named", [True, False], ids=["named", "listed"])
def test_a_stored_key_gone_from_kv_is_deleted_with_delete_missing(named):
    # GIVEN a stored key gone from KV, with delete_missing
    # WHEN the policy decides
    decided = job(
        planner(named=named, delete_missing=True).decide(KEY, None, stored(entry(), NOW - DAY), NOW)
    )

    # THEN its record is to be deleted
    assert decided.action is Action.DELETED
    assert decided.key == KEY
    assert decided.record is None


@pytest.mark.parametrize("named", [True, False], ids=["named", "listed"])
def test_a_key_gone_from_kv_without_a_record_needs_no_delete(named):
    # GIVEN a key neither in KV nor stored, with delete_missing
    # WHEN the policy decides
    decided = outcome(planner(named=named, delete_missing=True).decide(KEY, None, None, NOW))

    # THEN there is nothing to delete and nothing failed
    assert decided.action is Action.MISSING
    assert decided.error is None


def test_a_listed_key_gone_from_kv_is_left_alone_without_delete_missing():
    # GIVEN a record whose key a listing no longer shows
    state = stored(entry(), NOW - DAY)

    # WHEN the policy decides without delete_missing
    decided = outcome(planner(named=False, delete_missing=False).decide(KEY, None, state, NOW))

    # THEN nothing happens and nothing fails
    assert decided.action is Action.MISSING
    assert decided.error is None
