"""The runs' bookkeeping items (``kv_sync.ledger``): the namespace's lease, pending deletions.

Against moto's table. The lease lets one multi-key run sync a namespace at a time;
pending deletions keep what an unfinished run found gone from KV for its end.
"""

from __future__ import annotations

from typing import Any

import pytest

from kv_sync import ledger, store
from tests.support.cloudflare import PK, TABLE
from tests.support.sync_runs import LEASE_SK, lease, pending_items, store_records

NOW = 1_800_000_000.0
STARTED = "2026-01-02T03:04:05.000006Z"


def run(run_id: str, started_at: str = STARTED) -> dict[str, Any]:
    """What a run puts in the lease besides its expiry."""
    return {"run_id": run_id, "started_at": started_at, "selector": '{"all": true}'}


def acquire(run_id: str, *, now: float = NOW, lasts: float = 300) -> dict[str, Any] | None:
    return ledger.acquire_lease(TABLE, PK, run(run_id), now, now + lasts)


def holder(aws: Any) -> tuple[str, int]:
    """Who holds the lease as stored, and until when."""
    item = lease(aws)
    assert item is not None, "nobody holds the lease"
    return item["run_id"]["S"], int(item["expires_at"]["N"])


# ------------------------------------------------------------------------ lease


def test_a_free_lease_is_acquired(aws):
    # GIVEN a namespace no run holds
    # WHEN a run acquires its lease for 300 s
    conflict = acquire("run-1")

    # THEN it holds it, with what a conflicting run will be told
    assert conflict is None
    item = lease(aws)
    assert item is not None
    assert holder(aws) == ("run-1", int(NOW) + 300)
    assert item["started_at"]["S"] == STARTED
    assert item["selector"]["S"] == '{"all": true}'


def test_a_live_lease_of_another_run_is_not_taken_and_names_its_holder(aws):
    # GIVEN run-1 holding the lease until NOW + 300
    acquire("run-1")

    # WHEN run-2 tries to acquire it 100 s later
    conflict = acquire("run-2", now=NOW + 100, lasts=600)

    # THEN it is refused the lease, and told who holds it, since when and until when
    assert conflict is not None
    assert conflict["run_id"] == "run-1"
    assert conflict["started_at"] == STARTED
    assert conflict["expires_at"] == int(NOW) + 300
    assert conflict["selector"] == '{"all": true}'
    assert holder(aws) == ("run-1", int(NOW) + 300)


def test_an_expired_lease_is_taken_over(aws):
    # GIVEN run-1's lease, which expired at NOW + 300 (its invocation died)
    acquire("run-1")

    # WHEN run-2 acquires it after that
    conflict = acquire("run-2", now=NOW + 301)

    # THEN run-2 holds it now
    assert conflict is None
    assert holder(aws) == ("run-2", int(NOW) + 601)


def test_the_same_run_takes_its_lease_again(aws):
    # GIVEN run-1 holding the lease (its next invocation carries the same run id)
    acquire("run-1")

    # WHEN its next invocation acquires it while it is still live
    conflict = acquire("run-1", now=NOW + 200)

    # THEN it holds it again, with a new expiry
    assert conflict is None
    assert holder(aws) == ("run-1", int(NOW) + 500)


def test_extending_moves_the_expiry_of_the_holders_lease_only(aws):
    # GIVEN run-1 holding the lease
    acquire("run-1")

    # WHEN run-1 extends it, and run-2 tries to
    extended = ledger.extend_lease(TABLE, PK, "run-1", NOW + 900)
    stolen = ledger.extend_lease(TABLE, PK, "run-2", NOW + 5_000)

    # THEN only the holder's extension lands
    assert extended is True
    assert stolen is False
    assert holder(aws) == ("run-1", int(NOW) + 900)


def test_a_lease_taken_over_cannot_be_extended_by_its_former_holder(aws):
    # GIVEN run-1's lease expired and taken over by run-2
    acquire("run-1")
    acquire("run-2", now=NOW + 301)

    # WHEN run-1, slow to notice, tries to extend it
    extended = ledger.extend_lease(TABLE, PK, "run-1", NOW + 900)

    # THEN run-2 keeps it
    assert extended is False
    assert holder(aws) == ("run-2", int(NOW) + 601)


def test_only_the_holder_releases_the_lease(aws):
    # GIVEN run-1 holding the lease
    acquire("run-1")

    # WHEN run-2 releases it, then run-1 does
    ledger.release_lease(TABLE, PK, "run-2")
    after_other = lease(aws)
    ledger.release_lease(TABLE, PK, "run-1")

    # THEN another run's release leaves it alone; the holder's frees it
    assert after_other is not None
    assert lease(aws) is None
    assert acquire("run-3") is None


def test_releasing_a_free_lease_is_harmless(aws):
    # GIVEN no lease
    # WHEN a run releases it anyway (say, after it expired and was released by another)
    ledger.release_lease(TABLE, PK, "run-1")

    # THEN nothing is there, and nothing failed
    assert lease(aws) is None


def test_the_lease_is_invisible_to_readers_of_records(aws):
    # GIVEN a record and a lease in the namespace's partition
    store_records(aws, ["a"])
    acquire("run-1")

    # WHEN the stored records are read as a listing page reads them
    states, _ = store.query_states(TABLE, PK, "KEY#", "KEY$")

    # THEN only the record is there
    assert list(states) == ["KEY#a"]
    assert lease(aws) is not None and LEASE_SK < "KEY#"


# ----------------------------------------------------------- pending deletions


def test_pending_deletions_round_trip(aws):
    # GIVEN records found gone by an unfinished run, with when each was seen missing
    gone = {
        "KEY#a": "2026-01-02T03:04:05.000001Z",
        "KEY#ключ/🙂": "2026-01-02T03:04:05.000002Z",
    }

    # WHEN they are saved, then loaded by the run's last invocation
    parts = ledger.save_pending(TABLE, PK, "run-1", gone, first_part=0, now=NOW)
    loaded = ledger.load_pending(TABLE, PK, "run-1")

    # THEN the same records and times come back, from one item
    assert parts == 1
    assert loaded == gone


def test_pending_deletions_expire_by_themselves(aws):
    # GIVEN a run that saved pending deletions and was then abandoned
    ledger.save_pending(TABLE, PK, "run-1", {"KEY#a": STARTED}, first_part=0, now=NOW)

    # THEN the item carries a ttl two days on, so that DynamoDB removes it
    [item] = pending_items(aws).values()
    assert int(item["ttl"]["N"]) == int(NOW) + ledger.PENDING_TTL_S
    assert ledger.PENDING_TTL_S == 2 * 86_400


def test_many_pending_deletions_span_numbered_items(aws, monkeypatch):
    # GIVEN items of at most two records, and two invocations of one run saving five
    # records, then three more
    monkeypatch.setattr(ledger, "PENDING_PER_ITEM", 2)
    first = {f"KEY#k{i}": STARTED for i in range(5)}
    second = {f"KEY#m{i}": STARTED for i in range(3)}

    # WHEN the first saves from part 0, the second from where it stopped
    first_parts = ledger.save_pending(TABLE, PK, "run-1", first, first_part=0, now=NOW)
    second_parts = ledger.save_pending(TABLE, PK, "run-1", second, first_part=first_parts, now=NOW)

    # THEN each item holds at most two, numbered in turn, and loading gets them all
    assert (first_parts, second_parts) == (3, 2)
    assert sorted(pending_items(aws)) == [f"#RUN#run-1#DELETE#{n:06d}" for n in range(5)]
    assert ledger.load_pending(TABLE, PK, "run-1") == first | second


def test_dropping_pending_deletions_removes_every_part(aws, monkeypatch):
    # GIVEN a run's pending deletions over three items
    monkeypatch.setattr(ledger, "PENDING_PER_ITEM", 2)
    gone = {f"KEY#k{i}": STARTED for i in range(5)}
    parts = ledger.save_pending(TABLE, PK, "run-1", gone, first_part=0, now=NOW)

    # WHEN the run drops them (its end deleted the records, or refused to)
    ledger.drop_pending(TABLE, PK, "run-1", parts)

    # THEN none is left
    assert pending_items(aws) == {}
    assert ledger.load_pending(TABLE, PK, "run-1") == {}


def test_each_run_loads_and_drops_only_its_own_pending_deletions(aws):
    # GIVEN two runs' pending deletions in the same namespace
    ledger.save_pending(TABLE, PK, "run-1", {"KEY#a": STARTED}, first_part=0, now=NOW)
    ledger.save_pending(TABLE, PK, "run-2", {"KEY#b": STARTED}, first_part=0, now=NOW)

    # WHEN run-1 loads, then drops, its own
    loaded = ledger.load_pending(TABLE, PK, "run-1")
    ledger.drop_pending(TABLE, PK, "run-1", 1)

    # THEN it never saw run-2's, which is still there
    assert loaded == {"KEY#a": STARTED}
    assert ledger.load_pending(TABLE, PK, "run-2") == {"KEY#b": STARTED}


@pytest.mark.parametrize("count", [0, 1, 500, 501])
def test_item_count_follows_pending_per_item(aws, count):
    # GIVEN a number of records found gone, at the deployed 500 per item
    gone = {f"KEY#{i:04d}": STARTED for i in range(count)}

    # WHEN they are saved
    parts = ledger.save_pending(TABLE, PK, "run-1", gone, first_part=0, now=NOW)

    # THEN as many items as it takes were written, and all of them load back
    assert parts == -(-count // ledger.PENDING_PER_ITEM)
    assert len(pending_items(aws)) == parts
    assert ledger.load_pending(TABLE, PK, "run-1") == gone
