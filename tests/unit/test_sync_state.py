"""The sync-state item: each ``all`` or ``prefix`` run records its last run and last complete run.

Readers check it (``kv_sync_reader``'s ``freshness``); every invocation of a run
updates ``last_run``, and only a complete run ``last_complete``.
"""

from __future__ import annotations

from typing import Any

from kv_sync import ledger
from tests.support.cloudflare import PK, TABLE
from tests.support.sync_runs import follow, invoke, seed, state_items


def sync_state(aws: Any, sk: str = "#SYNC#all") -> dict[str, Any]:
    item = state_items(aws).get(sk)
    assert item is not None, f"no {sk} item"
    return item


def counts(run: dict[str, Any]) -> dict[str, int]:
    names = ("listed", "written", "unchanged", "deleted", "failed")
    return {name: int(run["M"][name]["N"]) for name in names}


def test_a_run_over_several_invocations_counts_the_whole_run(
    aws, kv, small_pages, one_page_per_invocation
):
    # GIVEN a namespace of 5 keys whose sync takes three invocations
    seed(kv, [f"k{i}" for i in range(5)])

    # WHEN the first invocation stops with a cursor
    first = invoke({"all": True})

    # THEN the item has the run so far, not complete, and no complete run yet
    item = sync_state(aws)
    assert first["data"]["complete"] is False
    assert item["last_run"]["M"]["complete"] == {"BOOL": False}
    assert counts(item["last_run"]) == dict(listed=2, written=2, unchanged=0, deleted=0, failed=0)
    assert "last_complete" not in item

    # WHEN the run is followed to its end
    follow({"all": True}, first)

    # THEN the last run and the last complete run are that run, counted whole
    item = sync_state(aws)
    assert item["last_complete"] == item["last_run"]
    assert item["last_run"]["M"]["complete"] == {"BOOL": True}
    assert counts(item["last_run"]) == dict(listed=5, written=5, unchanged=0, deleted=0, failed=0)
    assert item["selector"] == {"S": '{"all": true}'}


def test_a_failed_run_keeps_the_last_complete_one(aws, kv):
    # GIVEN a complete sync of 4 keys, then 3 of them gone from KV
    seed(kv, ["a", "b", "c", "d"])
    invoke({"all": True})
    complete = sync_state(aws)["last_complete"]
    for name in ("a", "b", "c"):
        kv.delete(name)

    # WHEN a delete_missing run is refused by the deletion guard
    refused = invoke({"all": True, "delete_missing": True})

    # THEN its failure is the last run, and the complete run is kept
    assert refused["error"]["type"] == "DELETION_REFUSED"
    item = sync_state(aws)
    assert item["last_run"]["M"]["error_type"] == {"S": "DELETION_REFUSED"}
    assert item["last_run"]["M"]["complete"] == {"BOOL": False}
    assert item["last_complete"] == complete


def test_prefixes_have_their_own_item_and_named_keys_none(aws, kv):
    # GIVEN keys under two prefixes
    seed(kv, ["flags/a", "flags/b", "config/x"])

    # WHEN a prefix run and a named-keys run are made
    invoke({"prefix": "flags/"})
    invoke({"key_names": ["config/x"]})

    # THEN only the prefix has a sync-state item
    syncs = {sk for sk in state_items(aws) if sk.startswith("#SYNC#")}
    assert syncs == {"#SYNC#prefix#flags/"}
    assert counts(sync_state(aws, "#SYNC#prefix#flags/")["last_run"])["listed"] == 2


def test_a_late_invocation_of_an_older_run_does_not_hide_a_newer_run(aws):
    # GIVEN the state of a run started at 06:00
    newer = {"run_id": "new", "started_at": "2026-12-03T06:00:00.000000Z", "complete": True}
    assert ledger.save_run(TABLE, PK, "#SYNC#all", "{}", newer, updated_at="t1")

    # WHEN an invocation of a run started at 05:00 ends afterwards
    older = {"run_id": "old", "started_at": "2026-12-03T05:00:00.000000Z", "complete": False}
    written = ledger.save_run(TABLE, PK, "#SYNC#all", "{}", older, updated_at="t2")

    # THEN the item still holds the newer run
    assert written is False
    assert sync_state(aws)["last_run"]["M"]["run_id"] == {"S": "new"}
