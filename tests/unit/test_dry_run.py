"""Dry runs (``"dry_run": true``): read everything, write and delete nothing, say what would be.

For every selector, a dry run makes no DynamoDB write at all (no record, no lease,
no pending deletion); its statistics are the counts the real run then produces,
and ``data.sample`` names up to 20 keys per action. Through the handler.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.cloudflare import stored_items
from tests.support.function import load_event
from tests.support.sync_runs import (
    follow,
    hold_lease,
    invoke,
    seed,
    state_items,
    store_records,
    values,
)

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
NAMES = ["p/a", "p/b", "p/c", "p/d", "p/e", "p/f", "p/g"]
MULTI_KEY: dict[str, dict[str, Any]] = {
    "key_names": {"key_names": NAMES},
    "prefix": {"prefix": "p/"},
    "all": {"all": True},
}
COUNTS = ("records_written", "records_unchanged", "records_deleted", "records_failed")


def writes(calls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The DynamoDB writes among ``calls``, whatever item they concern."""
    return [call for call in calls if call[0] in WRITES]


@pytest.fixture
def changed_namespace(aws, kv) -> None:
    """p/a..p/e synced once; since then p/a changed, p/e left KV, p/f and p/g arrived."""
    seed(kv, NAMES[:5])
    assert invoke({"prefix": "p/"})["success"] is True
    kv.put("p/a", "a new value")
    kv.delete("p/e")
    seed(kv, ["p/f", "p/g"])


# -------------------------------------------------------------------- multi-key


@pytest.mark.parametrize("selector", list(MULTI_KEY))
def test_a_dry_run_writes_nothing_and_counts_what_the_real_run_does(
    aws, kv, changed_namespace, dynamodb_items, selector
):
    # GIVEN a namespace changed since its last sync, and the table as it stands
    event = {**MULTI_KEY[selector], "delete_missing": True}
    before, state_before = stored_items(aws), state_items(aws)
    dynamodb_items.clear()

    # WHEN a dry run of a delete_missing sync is made
    dry = invoke({**event, "dry_run": True})

    # THEN DynamoDB was read but not written at all: no record, no lease, no sync state
    assert dynamodb_items
    assert writes(dynamodb_items) == []
    assert stored_items(aws) == before
    assert state_items(aws) == state_before
    assert not any(sk.startswith(("#LEASE", "#RUN#")) for sk in state_before)
    # AND the document says it was a dry run, and what the sync would do
    data, statistics = dry["data"], dry["statistics"]
    assert dry["success"] is True
    assert data["dry_run"] is True
    assert data["message"] == (
        "Dry run, nothing written: would sync 6 key(s): "
        "3 written, 3 unchanged, 1 deleted, 0 failed; complete"
    )
    assert {action: sorted(names) for action, names in data["sample"].items()} == {
        "written": ["p/a", "p/f", "p/g"],
        "unchanged": ["p/b", "p/c", "p/d"],
        "deleted": ["p/e"],
    }
    assert statistics["dynamodb_writes"] == statistics["state_writes"] == 0
    assert data["deletion"]["to_delete"] == 1
    assert data["deletion"]["refused"] is None

    # WHEN the real run follows
    real = invoke(event)

    # THEN it did exactly what the dry run said
    assert [real["statistics"][name] for name in COUNTS] == [statistics[name] for name in COUNTS]
    assert real["data"]["deletion"] == data["deletion"]
    assert "dry_run" not in real["data"]
    assert sorted(values(aws)) == ["p/a", "p/b", "p/c", "p/d", "p/f", "p/g"]


def test_a_dry_run_samples_at_most_20_names_per_action(aws, kv):
    # GIVEN 25 keys never synced
    names = [f"k{i:02d}" for i in range(25)]
    seed(kv, names)

    # WHEN the namespace is dry-run
    reply = invoke({"all": True, "dry_run": True})

    # THEN all 25 are counted, and the first 20 named
    assert reply["statistics"]["records_written"] == 25
    assert reply["data"]["sample"] == {"written": names[:20]}
    assert values(aws) == {}


def test_a_dry_run_reports_a_refusal_instead_of_failing(aws, kv, dynamodb_items):
    # GIVEN records for a..d of which KV holds only a: deleting the rest is 75 %
    store_records(aws, list("abcd"))
    seed(kv, ["a"])

    # WHEN a delete_missing run is dry-run
    reply = invoke({"all": True, "delete_missing": True, "dry_run": True})

    # THEN it succeeds, saying the guard would refuse, and the gone keys count as missing
    assert reply["success"] is True
    deletion = reply["data"]["deletion"]
    assert deletion["to_delete"] == 3
    assert "would delete 3 of the selection's 4 stored records" in deletion["refused"]
    assert reply["statistics"]["records_deleted"] == 0
    assert sorted(reply["data"]["sample"]["missing"]) == ["b", "c", "d"]
    assert writes(dynamodb_items) == []
    assert sorted(values(aws)) == list("abcd")


def test_a_dry_run_checks_the_lease_without_taking_it(aws, kv):
    # GIVEN another multi-key run holding the namespace's lease
    seed(kv, ["a"])
    hold_lease(aws, run_id="other", started_at="2026-01-02T03:04:05.000006Z", expires_at=4e9)

    # WHEN a dry run of the namespace is made
    reply = invoke({"all": True, "dry_run": True})

    # THEN it is turned away like the real run would be
    assert reply["error"]["type"] == "CONFLICT"
    assert list(state_items(aws)) == ["#LEASE"]


def test_a_dry_runs_cursor_continues_only_a_dry_run(
    aws, kv, small_pages, one_page_per_invocation, dynamodb_items
):
    # GIVEN a namespace whose dry run takes three invocations
    seed(kv, [f"k{i}" for i in range(5)])
    event = {"all": True, "dry_run": True}

    # WHEN the dry run is followed to its end
    replies = follow(event)

    # THEN every invocation wrote nothing, and together they counted every key
    assert len(replies) == 3
    assert writes(dynamodb_items) == []
    assert sum(r["statistics"]["records_written"] for r in replies) == 5
    assert values(aws) == {}

    # AND a real run cannot pick up a dry run's cursor
    first = invoke(event)
    refused = invoke({"all": True, "cursor": first["data"]["next_cursor"]})
    assert refused["error"]["type"] == "VALIDATION_ERROR"
    assert "dry_run" in refused["error"]["message"]
    assert values(aws) == {}


def test_a_function_url_get_with_dry_run_true_writes_nothing(aws, kv, dynamodb_items):
    # GIVEN a Function URL GET with ?prefix=p/&dry_run=true
    seed(kv, ["p/a", "p/b"])
    event = load_event("lambdaFunctionUrlIAMEventGet.json")
    event["queryStringParameters"] = {"prefix": "p/", "dry_run": "true"}
    event["rawQueryString"] = "prefix=p/&dry_run=true"

    # WHEN it is handled
    response = invoke(event)

    # THEN the answer is a 200 dry-run document, and nothing was written
    assert response["statusCode"] == 200
    document = json.loads(response["body"])
    assert document["data"]["dry_run"] is True
    assert document["statistics"]["records_written"] == 2
    assert writes(dynamodb_items) == []


# -------------------------------------------------------------------- single key


def test_a_dry_run_of_one_new_key_says_it_would_store_it(aws, kv, dynamodb_items):
    # GIVEN a key never synced
    kv.put("flag", "on")

    # WHEN it is dry-run by name
    reply = invoke({"key_name": "flag", "dry_run": True})

    # THEN the single-key document says what would happen, and nothing was written
    assert reply["success"] is True
    data = reply["data"]
    assert data["message"] == "Dry run: 'flag' would be stored; nothing was written"
    assert data["dry_run"] is True
    assert data["sample"] == {"written": ["flag"]}
    assert data["record"]["changed"] is True
    assert data["processing_summary"]["record_stored"] is False
    assert reply["statistics"]["dynamodb_writes"] == 0
    assert writes(dynamodb_items) == []
    assert values(aws) == {}

    # WHEN the real sync follows
    real = invoke({"key_name": "flag"})

    # THEN it stored the record the dry run described
    assert real["data"]["record"] == data["record"]
    assert values(aws) == {"flag": "on"}


def test_a_dry_run_of_one_unchanged_key_says_it_is_unchanged(aws, kv, dynamodb_items):
    # GIVEN a key synced and not changed since
    kv.put("flag", "on")
    invoke({"key_name": "flag"})
    dynamodb_items.clear()

    # WHEN it is dry-run by name
    reply = invoke({"key_name": "flag", "dry_run": True})

    # THEN the document is a dry run's, the record unchanged, and nothing was written
    assert reply["data"]["dry_run"] is True
    assert reply["data"]["sample"] == {"unchanged": ["flag"]}
    assert reply["data"]["record"]["changed"] is False
    assert reply["data"]["processing_summary"]["record_stored"] is False
    assert writes(dynamodb_items) == []


@pytest.mark.parametrize(
    ("force_delete", "says"),
    [
        (False, "the deletion guard would refuse to delete its record"),
        (True, "its DynamoDB record would be deleted (dry run)"),
    ],
    ids=["guarded", "forced"],
)
def test_a_dry_run_of_one_gone_key_says_what_would_become_of_its_record(
    aws, kv, dynamodb_items, force_delete, says
):
    # GIVEN a stored record whose key left KV
    store_records(aws, ["gone"])

    # WHEN it is dry-run by name with delete_missing
    reply = invoke(
        {"key_name": "gone", "delete_missing": True, "force_delete": force_delete, "dry_run": True}
    )

    # THEN the key is NOT_FOUND, the message says what the real run would do, and
    # the record is still there
    assert reply["error"]["type"] == "NOT_FOUND"
    assert says in reply["error"]["message"]
    assert writes(dynamodb_items) == []
    assert sorted(values(aws)) == ["gone"]
