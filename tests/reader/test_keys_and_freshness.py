"""``KVMirror.keys`` lists the mirrored key names; ``KVMirror.freshness`` reads a
selector's sync-state item (its last complete run, and its last run)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from kv_sync.handler import lambda_handler
from kv_sync_reader import Freshness, MirrorUnavailableError
from local.lambda_context import LambdaContext
from tests.support.cloudflare import FakeNamespace


def test_keys_lists_names_under_a_prefix_in_kv_order_without_expired_ones(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, wall_clock: Any
):
    # GIVEN keys under two prefixes, one of them expiring in a minute, synced
    now = int(wall_clock())
    for name in ("flags/b", "flags/a", "flags/ä", "config/x", "flagship"):
        kv.put(name, "v")
    kv.put("flags/expiring", "v", expiration=now + 60)
    sync()
    mirror = mirror_factory()

    # WHEN the keys are listed before and after the expiration
    everything = list(mirror.keys())
    before = list(mirror.keys("flags/"))
    wall_clock.now = now + 60
    after = list(mirror.keys("flags/"))

    # THEN the listing holds only records (no sync bookkeeping), ordered by UTF-8
    # bytes as KV lists them; the expired key is gone once its expiration passes
    assert everything == ["config/x", "flags/a", "flags/b", "flags/expiring", "flags/ä", "flagship"]
    assert before == ["flags/a", "flags/b", "flags/expiring", "flags/ä"]
    assert after == ["flags/a", "flags/b", "flags/ä"]


def test_keys_follows_query_pages(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, dynamodb_calls: Any
):
    # GIVEN three records of ~380 KB each: more than one 1 MB Query page
    rng = random.Random(12)
    for index in range(3):
        kv.put(f"big/{index}", b"\xff" + rng.randbytes(380_000))
    sync()

    # WHEN the keys are listed
    names = list(mirror_factory().keys("big/"))

    # THEN every key is there, read over more than one Query
    assert names == ["big/0", "big/1", "big/2"]
    assert len(dynamodb_calls.names("Query")) > 1


def test_keys_reports_dynamodb_failure(aws: Any, mirror_factory: Any, dynamodb_calls: Any):
    # GIVEN DynamoDB failing
    dynamodb_calls.failing = True

    # WHEN keys are listed THEN the failure is raised as MirrorUnavailableError
    with pytest.raises(MirrorUnavailableError, match="Could not list keys 'flags/'"):
        list(mirror_factory().keys("flags/"))


def test_freshness_is_none_before_any_multi_key_run(
    kv: FakeNamespace, sync: Any, mirror_factory: Any
):
    # GIVEN a table where only named keys were synced (those keep no sync state)
    kv.put("k", "v")
    sync(key_names=["k"])

    # WHEN the freshness is read THEN there is none, for all keys or a prefix
    mirror = mirror_factory()
    assert mirror.freshness() is None
    assert mirror.freshness("flags/") is None


RUN = {
    "run_id": "run-2",
    "started_at": "2026-12-03T06:00:00.000000Z",
    "finished_at": "2026-12-03T06:00:19.642192Z",
    "complete": True,
    "listed": 1200,
    "written": 12,
    "unchanged": 1185,
    "deleted": 2,
    "failed": 1,
}


def test_freshness_of_a_complete_run(
    aws: Any, sync_state: Any, mirror_factory: Any, wall_clock: Any
):
    # GIVEN a complete run of all keys that finished 40.5 s ago
    finished = datetime(2026, 12, 3, 6, 0, 19, 642192, tzinfo=UTC)
    sync_state(last_run=RUN, last_complete=RUN)
    wall_clock.now = finished.timestamp() + 40.5

    # WHEN the freshness is read
    freshness = mirror_factory().freshness()

    # THEN it has that run's times, age and counts
    assert freshness is not None
    assert freshness.age_seconds == pytest.approx(40.5)
    assert freshness == Freshness(
        selector={"all": True},
        last_complete_started_at=datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC),
        last_complete_finished_at=finished,
        age_seconds=freshness.age_seconds,
        listed=1200,
        written=12,
        unchanged=1185,
        deleted=2,
        failed=1,
        last_run_complete=True,
        last_run_started_at=datetime(2026, 12, 3, 6, 0, 0, tzinfo=UTC),
        last_run_finished_at=finished,
        last_run_error_type=None,
        updated_at=finished,
    )
    assert freshness.ever_complete


def test_freshness_after_a_failed_run_keeps_the_last_complete_one(
    aws: Any, sync_state: Any, mirror_factory: Any
):
    # GIVEN a failed run after the complete one
    failed = {
        **RUN,
        "run_id": "run-3",
        "started_at": "2026-12-03T06:05:00.000000Z",
        "finished_at": "2026-12-03T06:05:02.500000Z",
        "complete": False,
        "error_type": "RATE_LIMITED",
        "listed": 100,
    }
    sync_state(last_run=failed, last_complete=RUN)

    # WHEN the freshness is read
    freshness = mirror_factory().freshness()

    # THEN it tells the last run failed, and still gives the complete run's times and counts
    assert freshness is not None
    assert freshness.last_run_complete is False
    assert freshness.last_run_error_type == "RATE_LIMITED"
    assert freshness.last_run_finished_at == datetime(2026, 12, 3, 6, 5, 2, 500000, tzinfo=UTC)
    assert freshness.last_complete_finished_at == datetime(
        2026, 12, 3, 6, 0, 19, 642192, tzinfo=UTC
    )
    assert freshness.listed == 1200


def test_freshness_of_a_prefix_that_never_completed(aws: Any, sync_state: Any, mirror_factory: Any):
    # GIVEN a prefix whose only run stopped part-way, and nothing for all keys
    stopped = {**RUN, "complete": False, "listed": 300}
    sync_state(last_run=stopped, last_complete=None, prefix="flags/")

    # WHEN the freshness of the prefix is read
    mirror = mirror_factory()
    freshness = mirror.freshness("flags/")

    # THEN it has the last run but no complete one (times, age and counts None)
    assert freshness is not None
    assert freshness.selector == {"prefix": "flags/"}
    assert not freshness.ever_complete
    assert (freshness.last_complete_finished_at, freshness.age_seconds) == (None, None)
    assert freshness.listed is None
    assert freshness.last_run_complete is False
    assert freshness.last_run_error_type is None
    # AND all keys still have none
    assert mirror.freshness() is None


# ------------------------------------------------- the sync-state item the engine writes


def test_freshness_after_real_syncs_of_all_keys_and_of_a_prefix(
    kv: FakeNamespace, sync: Any, mirror_factory: Any, wall_clock: Any
):
    # GIVEN a namespace synced whole, then one of its prefixes
    for name in ("flags/a", "flags/b", "other"):
        kv.put(name, f"value of {name}")
    whole = sync(all=True)
    kv.put("flags/c", "new")
    flags = sync(prefix="flags/")
    wall_clock.now = datetime.now(UTC).timestamp()

    # WHEN the freshness of each is read
    mirror = mirror_factory()
    everything, prefix = mirror.freshness(), mirror.freshness("flags/")

    # THEN each selector has its own complete run, with the counts its reply gave
    assert everything is not None and prefix is not None
    assert everything.selector == {"all": True} and prefix.selector == {"prefix": "flags/"}
    assert everything.last_run_complete and everything.ever_complete
    assert (everything.listed, everything.written, everything.unchanged) == (
        whole["statistics"]["keys_listed"],
        3,
        0,
    )
    assert (prefix.listed, prefix.written, prefix.unchanged) == (3, 1, 2)
    assert prefix.deleted == prefix.failed == 0
    assert everything.age_seconds is not None and 0 <= everything.age_seconds < 60
    assert prefix.last_complete_started_at is not None
    assert prefix.last_complete_finished_at is not None
    assert prefix.last_complete_started_at <= prefix.last_complete_finished_at
    assert flags["data"]["complete"] is True


def test_a_failed_real_run_is_recorded_without_hiding_the_last_complete_one(
    kv: FakeNamespace, sync: Any, mirror_factory: Any
):
    # GIVEN a complete sync of 4 keys, then 3 of them deleted from KV
    for name in ("a", "b", "c", "d"):
        kv.put(name, "v")
    sync(all=True)
    for name in ("a", "b", "c"):
        kv.delete(name)

    # WHEN a delete_missing run is refused by the deletion guard (75 % > 25 %)
    reply = lambda_handler({"all": True, "delete_missing": True}, LambdaContext())
    assert reply["error"]["type"] == "DELETION_REFUSED"

    # THEN the freshness says the last run failed with that type, and keeps the complete one
    freshness = mirror_factory().freshness()
    assert freshness is not None
    assert freshness.last_run_complete is False
    assert freshness.last_run_error_type == "DELETION_REFUSED"
    assert freshness.listed == 4
    assert freshness.last_run_started_at is not None
    assert freshness.last_complete_started_at is not None
    assert freshness.last_complete_started_at < freshness.last_run_started_at


def test_dry_runs_and_named_keys_leave_the_sync_state_alone(
    kv: FakeNamespace, sync: Any, mirror_factory: Any
):
    # GIVEN a namespace synced whole once
    kv.put("k", "v")
    sync(all=True)
    before = mirror_factory().freshness()

    # WHEN a dry run of all keys and a named-keys run follow
    kv.put("k", "changed")
    sync(all=True, dry_run=True)
    sync(key_names=["k"])

    # THEN the freshness is still that of the first run
    assert mirror_factory().freshness() == before
