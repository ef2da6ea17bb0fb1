"""Deleting the records of keys gone from KV (``delete_missing``) in multi-key runs.

Which records a listing shows to be gone, and when they are deleted: only at the end
of a complete run, none after a failed page. The deletion guard's own decisions are
``test_deletion_guard.py``'s subject; here it is set out of the way
(``MAX_DELETE_PERCENT=100``) so that each test is about the deletions themselves.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.sync_runs import (
    follow,
    invoke,
    lease,
    pending_items,
    seed,
    store_records,
    values,
)


@pytest.fixture
def unguarded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment that lets a run delete any share of its records."""
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")


# ------------------------------------------------------------------ one invocation


def test_keys_gone_from_every_page_are_deleted_with_delete_missing(aws, kv, small_pages, unguarded):
    # GIVEN records for a..h, of which only a, c, e and g are still in KV
    store_records(aws, list("abcdefgh"))
    seed(kv, list("aceg"))

    # WHEN the namespace is synced with delete_missing, two keys a page
    reply = invoke({"all": True, "delete_missing": True})

    # THEN the records of b, d, f and h are gone, in whichever page's range they fell
    assert sorted(values(aws)) == list("aceg")
    statistics = reply["statistics"]
    assert statistics["records_deleted"] == 4
    assert statistics["dynamodb_writes"] == 8
    assert statistics["records_processed"] == 8  # 4 fetched + 4 deleted
    assert statistics["records_stored"] == 4
    assert "4 deleted" in reply["data"]["message"]
    # AND the document gives the whole run's figures
    assert reply["data"]["deletion"] == {
        "to_delete": 4,
        "stored": 8,
        "max_delete_percent": 100,
        "force_delete": False,
        "refused": None,
        "skipped": None,
    }


def test_nothing_is_deleted_without_delete_missing(aws, kv, small_pages):
    # GIVEN records for a..d, of which only a and c are in KV
    store_records(aws, list("abcd"))
    seed(kv, list("ac"))

    # WHEN the namespace is synced without delete_missing
    reply = invoke({"all": True})

    # THEN every record is kept, and the document has no deletion figures
    assert sorted(values(aws)) == list("abcd")
    assert reply["statistics"]["records_deleted"] == 0
    assert "deletion" not in reply["data"]


def test_deployment_default_delete_missing_applies(aws, kv, monkeypatch, unguarded):
    # GIVEN DELETE_MISSING=true and a record whose key is gone
    monkeypatch.setenv("DELETE_MISSING", "true")
    store_records(aws, ["gone"])
    seed(kv, ["kept"])

    # WHEN a run does not say delete_missing, and another says false
    invoke({"all": True, "delete_missing": False})
    kept = sorted(values(aws))
    invoke({"all": True})

    # THEN the caller's false wins, and otherwise the deployment's default applies
    assert kept == ["gone", "kept"]
    assert sorted(values(aws)) == ["kept"]


@pytest.mark.parametrize(
    "prefix",
    ["flags/", "é", "a\U0010ffff", "\U0010ffff", "z"],
    ids=["slash", "two-byte", "ends-in-max", "only-max", "z"],
)
def test_prefix_with_delete_missing_deletes_only_under_the_prefix(aws, kv, prefix, unguarded):
    # GIVEN records under the prefix (some gone from KV) and right outside it
    inside_gone = [prefix + "gone", prefix + "\U0010ffff", prefix + "\U0010ffff" * 3 + "z"]
    outside = ["0", prefix[:-1] or "!", prefix[:-1] + chr(ord(prefix[-1]) - 1) + "\U0010ffff"]
    if ord(prefix[-1]) < 0x10FFFF:
        outside.append(prefix[:-1] + chr(ord(prefix[-1]) + 1))
    store_records(aws, inside_gone + outside)
    seed(kv, [prefix + "kept"])

    # WHEN the prefix is synced with delete_missing
    reply = invoke({"prefix": prefix, "delete_missing": True})

    # THEN exactly the gone records under the prefix were deleted
    assert reply["statistics"]["records_deleted"] == len(inside_gone)
    assert sorted(values(aws)) == sorted([prefix + "kept", *outside])


def test_a_key_equal_to_the_prefix_is_under_it(aws, kv, unguarded):
    # GIVEN a record of a key named exactly like the prefix, gone from KV
    store_records(aws, ["flags/"])
    seed(kv, ["flags/a"])

    # WHEN the prefix is synced with delete_missing
    invoke({"prefix": "flags/", "delete_missing": True})

    # THEN that record is deleted too: the key starts with the prefix
    assert sorted(values(aws)) == ["flags/a"]


def test_named_keys_gone_from_kv_are_deleted_at_the_end_of_the_run(aws, kv, monkeypatch, unguarded):
    # GIVEN five named keys read two at a time, two of them gone from KV but stored
    from kv_sync import pages

    monkeypatch.setattr(pages, "NAMES_PAGE_SIZE", 2)
    store_records(aws, ["n1", "n3"])
    seed(kv, ["n0", "n2", "n4"])

    # WHEN they are synced by name with delete_missing
    reply = invoke({"key_names": [f"n{i}" for i in range(5)], "delete_missing": True})

    # THEN their records are deleted and counted; the others are stored
    assert reply["success"] is True
    assert reply["statistics"]["records_deleted"] == 2
    assert sorted(values(aws)) == ["n0", "n2", "n4"]
    assert reply["data"]["deletion"]["to_delete"] == 2


# ------------------------------------------------------------- across invocations


def test_deletions_wait_for_the_end_of_a_run_spanning_invocations(
    aws, kv, small_pages, one_page_per_invocation, unguarded
):
    # GIVEN records for a..i, of which b, d, f and h are gone from KV (three pages)
    store_records(aws, list("abcdefghi"))
    seed(kv, list("acegi"))
    event: dict[str, Any] = {"all": True, "delete_missing": True}

    # WHEN a delete_missing run is followed invocation by invocation
    replies = [invoke(event)]
    during: list[tuple[list[str], int]] = []
    while not replies[-1]["data"]["complete"]:
        during.append((sorted(values(aws)), len(pending_items(aws))))
        replies.append(invoke({**event, "cursor": replies[-1]["data"]["next_cursor"]}))

    # THEN while it was unfinished nothing was deleted: what earlier invocations found
    # gone was kept aside in pending items
    assert len(replies) == 3
    assert [found for found, _ in during] == [list("abcdefghi")] * 2
    assert [pending for _, pending in during] == [1, 2]  # one item per invocation
    # AND the last invocation deleted every gone record, and nothing else
    assert sorted(values(aws)) == list("acegi")
    assert [r["statistics"]["records_deleted"] for r in replies] == [0, 0, 4]
    assert replies[-1]["data"]["deletion"]["to_delete"] == 4
    assert replies[-1]["data"]["deletion"]["stored"] == 9
    # AND it left no bookkeeping behind: no pending items, no lease
    assert pending_items(aws) == {}
    assert lease(aws) is None


def test_after_a_failed_page_the_resumed_run_deletes_nothing(
    aws, kv, small_pages, monkeypatch, unguarded
):
    # GIVEN records for a..f (b and d gone from KV), and Cloudflare failing the
    # listing from its second page on (a 500, one attempt)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    store_records(aws, list("abcdef"))
    seed(kv, list("acef"))
    kv.fail_after("list", 1)

    # WHEN a delete_missing run meets the failure
    event: dict[str, Any] = {"all": True, "delete_missing": True}
    reply = invoke(event)

    # THEN the run fails as a whole, with its progress and a cursor to resume from,
    # having deleted nothing
    assert reply["success"] is False
    assert reply["error"]["type"] == "API_ERROR"
    assert reply["error"]["is_retryable"] is True
    statistics = reply["statistics"]
    assert statistics["keys_listed"] == 2
    assert statistics["records_deleted"] == 0
    assert statistics["complete"] is False
    assert statistics["next_cursor"]
    assert sorted(values(aws)) == list("abcdef")

    # WHEN Cloudflare recovers and the run resumes from the cursor
    kv.recover()
    rest = invoke({**event, "cursor": statistics["next_cursor"]})

    # THEN it completes the sync, but deletes nothing (a listing page of this run
    # failed, so its view of KV may be incomplete), and says why
    assert rest["success"] is True
    assert rest["data"]["complete"] is True
    assert rest["statistics"]["records_deleted"] == 0
    assert rest["data"]["deletion"]["skipped"] == "a page of this run failed"
    assert rest["data"]["deletion"]["refused"] is None
    assert sorted(values(aws)) == list("abcdef")

    # AND the next complete run deletes them
    again = follow(event)[-1]
    assert again["statistics"]["records_deleted"] == 2
    assert again["data"]["deletion"]["skipped"] is None
    assert sorted(values(aws)) == list("acef")


def test_a_run_with_a_failed_page_leaves_no_pending_deletions_behind(
    aws, kv, small_pages, one_page_per_invocation, monkeypatch, unguarded
):
    # GIVEN records for a..f (b and d gone from KV), a run whose first invocation
    # keeps b aside as a pending deletion, and whose second page then fails
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    store_records(aws, list("abcdef"))
    seed(kv, list("acef"))
    event: dict[str, Any] = {"all": True, "delete_missing": True}
    first = invoke(event)
    assert len(pending_items(aws)) == 1
    kv.fail_after("list", 0)
    failed = invoke({**event, "cursor": first["data"]["next_cursor"]})
    assert failed["error"]["type"] == "API_ERROR"

    # WHEN Cloudflare recovers and the run is resumed to its end
    kv.recover()
    replies = follow({**event, "cursor": failed["statistics"]["next_cursor"]})

    # THEN nothing was deleted, and the pending item was cleared with the run
    assert replies[-1]["data"]["deletion"]["skipped"] == "a page of this run failed"
    assert sorted(values(aws)) == list("abcdef")
    assert pending_items(aws) == {}
    assert lease(aws) is None
