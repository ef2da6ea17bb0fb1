"""The deletion guard: a ``delete_missing`` run that would delete too much deletes nothing.

A run is refused (``DELETION_REFUSED``, 409, not retryable, severity critical) when
it would delete more than ``MAX_DELETE_PERCENT`` (default 25) of its selection's
stored records, or when its complete listing found no keys while records are stored.
``force_delete`` overrides it. The guard counts the whole run, however many
invocations it takes. Through the handler, with moto and ``responses``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.cloudflare import stored_items
from tests.support.function import load_event
from tests.support.sync_runs import (
    emf_documents,
    failed_metrics,
    follow,
    invoke,
    lease,
    pending_items,
    seed,
    store_records,
    values,
)

DELETE: dict[str, Any] = {"all": True, "delete_missing": True}


def deletion(reply: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = reply["data"]["deletion"]
    return figures


# ------------------------------------------------------------------ one invocation


def test_a_run_deleting_more_than_max_delete_percent_is_refused(aws, kv, capsys):
    # GIVEN records for a..d of which only a is still in KV, and a new key z
    store_records(aws, list("abcd"))
    seed(kv, ["a", "z"])

    # WHEN the namespace is synced with delete_missing (3 of 4 records to delete: 75 %)
    reply = invoke(DELETE)

    # THEN the run fails with DELETION_REFUSED, giving the figures and the way out
    assert reply["success"] is False
    error = reply["error"]
    assert error["type"] == "DELETION_REFUSED"
    assert error["is_retryable"] is False
    assert error["severity"] == "critical"
    assert "delete 3 of the selection's 4 stored records (75.0 %)" in error["message"]
    assert "MAX_DELETE_PERCENT (25 %)" in error["message"]
    assert "Nothing was deleted" in error["message"]
    assert '"force_delete": true' in error["message"]
    # AND nothing was deleted, while the new and changed keys were written
    assert sorted(values(aws)) == list("abcdz")
    assert values(aws)["z"] == '{"n": 1}'
    assert reply["statistics"]["records_deleted"] == 0
    assert reply["statistics"]["records_written"] == 2
    # AND the run is over: no cursor to resume, no lease or pending deletions left
    assert reply["statistics"]["complete"] is True
    assert reply["statistics"]["next_cursor"] is None
    assert lease(aws) is None
    assert pending_items(aws) == {}
    # AND the refusal is counted for the alarm
    assert failed_metrics(emf_documents(capsys.readouterr().out)) == ["DELETION_REFUSED"]


def test_a_refusal_through_the_function_url_is_409_without_retry_after(aws, kv):
    # GIVEN a POST asking for a delete_missing run that would delete half the records
    store_records(aws, ["a", "b"])
    seed(kv, ["a"])
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps(DELETE)

    # WHEN it is handled
    response = invoke(event)

    # THEN the answer is 409 DELETION_REFUSED, with nothing inviting a retry
    assert response["statusCode"] == 409
    assert "Retry-After" not in response["headers"]
    assert json.loads(response["body"])["error"]["type"] == "DELETION_REFUSED"
    assert sorted(values(aws)) == ["a", "b"]


@pytest.mark.parametrize(
    ("percent", "stored", "gone", "refused"),
    [
        ("25", 4, 1, False),
        ("24", 4, 1, True),
        ("50", 4, 2, False),
        ("49", 4, 2, True),
        ("100", 4, 3, False),
        ("0", 4, 1, True),
    ],
    ids=["at-25", "over-24", "at-50", "over-49", "at-100", "zero"],
)
def test_deleting_exactly_max_delete_percent_is_allowed(
    aws, kv, monkeypatch, percent, stored, gone, refused
):
    # GIVEN MAX_DELETE_PERCENT and records of which some are gone from KV
    monkeypatch.setenv("MAX_DELETE_PERCENT", percent)
    names = [f"k{i}" for i in range(stored)]
    store_records(aws, names)
    seed(kv, names[gone:])

    # WHEN the namespace is synced with delete_missing
    reply = invoke(DELETE)

    # THEN the run deletes when gone/stored is at most the limit, and only then
    if refused:
        assert reply["error"]["type"] == "DELETION_REFUSED"
        assert sorted(values(aws)) == names
    else:
        assert reply["success"] is True
        assert reply["statistics"]["records_deleted"] == gone
        assert sorted(values(aws)) == names[gone:]
        assert deletion(reply) == {
            "to_delete": gone,
            "stored": stored,
            "max_delete_percent": int(percent),
            "force_delete": False,
            "refused": None,
            "skipped": None,
        }


def test_an_empty_complete_listing_with_records_stored_is_refused(aws, kv, monkeypatch):
    # GIVEN a deployment allowing any share of deletions, records stored, and a listing
    # that comes back empty (a token for another namespace, an emptied namespace)
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")
    store_records(aws, ["a", "b"])

    # WHEN the namespace is synced with delete_missing
    reply = invoke(DELETE)

    # THEN the run is refused all the same, saying the listing found nothing
    message = reply["error"]["message"]
    assert reply["error"]["type"] == "DELETION_REFUSED"
    assert "complete listing found no keys, while 2 records are stored" in message
    assert sorted(values(aws)) == ["a", "b"]


def test_nothing_to_delete_is_never_refused(aws, kv):
    # GIVEN an empty table and an empty namespace
    # WHEN it is synced with delete_missing
    reply = invoke(DELETE)

    # THEN the run succeeds with nothing to delete
    assert reply["success"] is True
    assert deletion(reply)["to_delete"] == 0
    assert deletion(reply)["refused"] is None


def test_the_guard_counts_only_the_selections_records(aws, kv):
    # GIVEN two records under flags/ (one gone from KV) and ten outside it
    store_records(aws, ["flags/a", "flags/b", *[f"other/{i}" for i in range(10)]])
    seed(kv, ["flags/a"])

    # WHEN the prefix is synced with delete_missing
    reply = invoke({"prefix": "flags/", "delete_missing": True})

    # THEN 1 of the prefix's 2 records is 50 %: refused, whatever the table holds
    assert reply["error"]["type"] == "DELETION_REFUSED"
    assert "delete 1 of the selection's 2 stored records" in reply["error"]["message"]
    assert len(stored_items(aws)) == 12


# --------------------------------------------------------------------- force_delete


@pytest.mark.parametrize("listing", ["some-keys", "empty"])
def test_force_delete_deletes_and_the_document_says_so(aws, kv, log_stream, listing):
    # GIVEN records for a..d, of which KV holds only a (or nothing at all)
    store_records(aws, list("abcd"))
    kept = ["a"] if listing == "some-keys" else []
    seed(kv, kept)

    # WHEN the namespace is synced with delete_missing and force_delete
    reply = invoke({**DELETE, "force_delete": True})

    # THEN the records are deleted though the guard would refuse, and the document
    # says the guard was overridden and why it would have refused
    assert reply["success"] is True
    assert sorted(values(aws)) == kept
    assert reply["statistics"]["records_deleted"] == 4 - len(kept)
    figures = deletion(reply)
    assert figures["force_delete"] is True
    assert figures["refused"]
    assert figures["to_delete"] == 4 - len(kept)
    # AND a warning is logged for whoever reads the logs
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    overridden = [
        line for line in lines if line["message"] == "Deletion guard overridden by force_delete"
    ]
    assert len(overridden) == 1
    assert overridden[0]["level"] == "WARNING"


# -------------------------------------------------------------------- named keys


def test_a_named_key_gone_from_kv_is_refused_unless_forced(aws, kv):
    # GIVEN a stored record whose key was deleted in KV
    store_records(aws, ["gone"])
    event = {"key_name": "gone", "delete_missing": True}

    # WHEN it is synced by name with delete_missing
    refused = invoke(event)

    # THEN deleting it is 1 of the selection's 1 record (100 %): refused, record kept
    assert refused["error"]["type"] == "DELETION_REFUSED"
    assert "delete 1 of the selection's 1 stored records (100.0 %)" in refused["error"]["message"]
    assert sorted(values(aws)) == ["gone"]

    # WHEN it is synced again with force_delete
    forced = invoke({**event, "force_delete": True})

    # THEN the record is deleted, and the reply still says the key is not in KV
    assert forced["error"]["type"] == "NOT_FOUND"
    assert forced["error"]["message"].endswith("its DynamoDB record was deleted")
    assert values(aws) == {}


@pytest.mark.parametrize(
    "event",
    [{"key_name": "gone"}, {"key_names": ["gone", "also-gone"]}],
    ids=["key_name", "key_names"],
)
def test_named_keys_are_deleted_at_max_delete_percent_100(aws, kv, monkeypatch, event):
    # GIVEN a deployment allowing any share of deletions, and named keys gone from KV
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")
    store_records(aws, ["gone", "also-gone", "other"])
    named = event.get("key_names") or [event["key_name"]]

    # WHEN they are synced by name with delete_missing
    reply = invoke({**event, "delete_missing": True})

    # THEN their records are deleted (named keys are not a listing that came back
    # empty), and only theirs
    assert sorted(values(aws)) == sorted({"gone", "also-gone", "other"} - set(named))
    assert reply.get("error", {}).get("type") in (None, "NOT_FOUND")


# ------------------------------------------------------------- across invocations


def test_a_page_over_the_limit_is_fine_when_the_whole_run_is_under(
    aws, kv, small_pages, one_page_per_invocation
):
    # GIVEN records for a..h, of which only b is gone from KV: the first page
    # (a, c and the b between them) alone would be 1 of 3 records, the run 1 of 8
    store_records(aws, list("abcdefgh"))
    seed(kv, list("acdefgh"))

    # WHEN the run is followed invocation by invocation
    replies = follow(DELETE)

    # THEN b's record, found gone by the first invocation, is kept until the run is
    # complete, and then deleted: 1 of 8 (12.5 %) is under the limit
    assert len(replies) == 4
    assert [r["statistics"]["records_deleted"] for r in replies] == [0, 0, 0, 1]
    assert all("deletion" not in r["data"] for r in replies[:-1])
    assert deletion(replies[-1]) == {
        "to_delete": 1,
        "stored": 8,
        "max_delete_percent": 25,
        "force_delete": False,
        "refused": None,
        "skipped": None,
    }
    assert sorted(values(aws)) == list("acdefgh")
    assert pending_items(aws) == {}


def test_the_whole_run_over_the_limit_is_refused_though_its_last_page_is_under(
    aws, kv, small_pages, one_page_per_invocation
):
    # GIVEN records for a..h, of which a..d are gone from KV: the first invocation
    # finds 4 of them gone, the last one none
    store_records(aws, list("abcdefgh"))
    seed(kv, list("efgh"))

    # WHEN the run is followed invocation by invocation
    replies = follow(DELETE)

    # THEN the last invocation refuses: the run would delete 4 of 8 records (50 %),
    # and nothing is deleted, not even what the first invocation found
    assert len(replies) == 2
    assert replies[0]["success"] is True
    refused = replies[-1]
    assert refused["error"]["type"] == "DELETION_REFUSED"
    assert "delete 4 of the selection's 8 stored records (50.0 %)" in refused["error"]["message"]
    assert sorted(values(aws)) == list("abcdefgh")
    # AND the run leaves no pending deletions and no lease behind
    assert pending_items(aws) == {}
    assert lease(aws) is None


def test_force_delete_on_a_continued_run_deletes_what_every_invocation_found(
    aws, kv, small_pages, one_page_per_invocation
):
    # GIVEN records for a..h, of which a..d are gone from KV
    store_records(aws, list("abcdefgh"))
    seed(kv, list("efgh"))

    # WHEN a forced run is followed invocation by invocation
    replies = follow({**DELETE, "force_delete": True})

    # THEN the end of the run deletes all four
    assert replies[-1]["success"] is True
    assert replies[-1]["statistics"]["records_deleted"] == 4
    assert sorted(values(aws)) == list("efgh")
    assert pending_items(aws) == {}
