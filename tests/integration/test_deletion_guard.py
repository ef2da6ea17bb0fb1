"""The deletion guard end to end: a run deletes records of keys gone from KV only when
its whole, successful listing says so, and never most of the selection unless forced.

``MAX_DELETE_PERCENT`` is left at its default, 25 %: a run may delete up to a quarter
of the records its selection holds. To make a run take several invocations whatever
the machine's speed, ``one_page_per_invocation`` raises the time the engine wants
left before another page above any invocation's timeout: each invocation syncs one
listing page of 10 keys and returns ``next_cursor``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from local.harness import powertools_output
from tests.support.aws_calls import recorded_calls
from tests.support.function_url import function_url
from tests.support.iam import granted_dynamodb_operations
from tests.support.kv_data import seed
from tests.support.stack import Stack
from tests.support.table import held

RUN_ALL = {"all": True, "delete_missing": True}


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten keys a listing page (the API's minimum), so that a few dozen keys span pages.
    monkeypatch.setattr("kv_sync.pages.LIST_PAGE_SIZE", 10)


@pytest.fixture
def one_page_per_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """No invocation has the time the engine wants for a second page."""
    monkeypatch.setattr("kv_sync.engine.MIN_PAGE_SECONDS", 3_600.0)


def synced(stack: Stack, count: int) -> dict[str, bytes]:
    """``count`` keys in KV, all synced to the table."""
    values = seed(stack, count)
    last = run_to_the_end(stack, {"all": True})[-1]
    assert last["success"] is True and last["statistics"]["complete"] is True, last
    assert set(stack.items()) == set(values)
    return values


def gone_from_kv(stack: Stack, *keys: str) -> None:
    for key in keys:
        stack.emulator.delete(stack.namespace_id, key)


def run_to_the_end(
    stack: Stack, event: dict[str, Any], paused: Callable[[], None] | None = None
) -> list[dict[str, Any]]:
    """Invoke, then pass each ``next_cursor`` back until the run ends; every reply.

    ``paused`` is called whenever the run has paused, before it is continued.
    """
    replies = [stack.invoke(event)]
    while replies[-1].get("data", {}).get("next_cursor") and len(replies) < 20:
        if paused is not None:
            paused()
        replies.append(stack.invoke({**event, "cursor": replies[-1]["data"]["next_cursor"]}))
    return replies


def test_run_that_would_delete_most_records_is_refused(stack: Stack):
    # GIVEN 20 synced keys, 15 of which then left KV (75 % of the records)
    values = synced(stack, 20)
    gone = [f"flags/{i:03d}" for i in range(5, 20)]
    gone_from_kv(stack, *gone)

    # WHEN the namespace is synced with delete_missing
    response = stack.invoke(RUN_ALL)

    # THEN the run is refused, with the guard's figures, and not worth retrying
    assert response["success"] is False
    error = response["error"]
    assert error["type"] == "DELETION_REFUSED"
    assert error["is_retryable"] is False
    assert "15 of the selection's 20 stored records" in error["message"]
    assert '"force_delete": true' in error["message"]
    assert response["deletion"] == {
        "to_delete": 15,
        "stored": 20,
        "max_delete_percent": 25,
        "force_delete": False,
        "refused": response["deletion"]["refused"],
        "skipped": None,
    }
    assert "more than MAX_DELETE_PERCENT (25 %)" in response["deletion"]["refused"]
    # AND every record is still in the table
    assert set(stack.items()) == set(values)
    assert response["statistics"]["records_deleted"] == 0
    # AND the run let its lease go
    assert held(stack) == []


def test_function_url_answers_a_refusal_with_409(stack: Stack):
    # GIVEN 20 synced keys, 15 of which then left KV
    values = synced(stack, 20)
    gone_from_kv(stack, *(f"flags/{i:03d}" for i in range(15)))

    # WHEN a signed Function URL request syncs the namespace with delete_missing
    with function_url() as url:
        reply = url.post(RUN_ALL)

    # THEN 409 DELETION_REFUSED, not to be retried as is, and nothing was deleted
    assert reply.status == 409
    assert reply.headers["content-type"] == "application/json"
    assert reply.document["error"]["type"] == "DELETION_REFUSED"
    assert "Retry-After" not in reply.headers
    assert reply.document["deletion"]["to_delete"] == 15
    assert set(stack.items()) == set(values)


def test_force_delete_deletes_what_the_guard_refuses(stack: Stack):
    # GIVEN 20 synced keys, 15 of which then left KV
    values = synced(stack, 20)
    gone = [f"flags/{i:03d}" for i in range(15)]
    gone_from_kv(stack, *gone)

    # WHEN the namespace is synced with delete_missing and force_delete
    output = io.StringIO()
    with powertools_output(output):
        response = stack.invoke({**RUN_ALL, "force_delete": True})

    # THEN the 15 records are deleted; the document says the guard was overridden
    assert response["success"] is True, response
    assert response["statistics"]["records_deleted"] == 15
    deletion = response["data"]["deletion"]
    assert deletion["force_delete"] is True
    assert deletion["to_delete"] == 15 and deletion["stored"] == 20
    assert "more than MAX_DELETE_PERCENT" in deletion["refused"]
    assert set(stack.items()) == set(values) - set(gone)
    # AND the log warns that the guard was overridden
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    (warning,) = [line for line in lines if line.get("level") == "WARNING"]
    assert warning["message"] == "Deletion guard overridden by force_delete"


@pytest.mark.parametrize("force_delete", [False, True], ids=["refused", "forced"])
def test_emptied_namespace_is_refused_unless_forced(stack: Stack, force_delete: bool):
    # GIVEN 12 synced keys, then every key deleted from KV
    values = synced(stack, 12)
    gone_from_kv(stack, *values)

    # WHEN the namespace is synced with delete_missing (the listing finds no key at all)
    response = stack.invoke({**RUN_ALL, "force_delete": force_delete})

    # THEN without force_delete the run is refused and the table keeps every record
    if not force_delete:
        assert response["error"]["type"] == "DELETION_REFUSED"
        assert (
            "complete listing found no keys, while 12 records are stored"
            in (response["error"]["message"])
        )
        assert set(stack.items()) == set(values)
        return
    # AND with it the table is emptied as KV was
    assert response["statistics"]["keys_listed"] == 0
    assert response["statistics"]["records_deleted"] == 12
    assert stack.items() == {}


def test_named_key_gone_from_kv_is_refused_unless_forced(stack: Stack):
    # GIVEN a synced key, then deleted from KV: its record is all its selection holds
    stack.emulator.put(stack.namespace_id, "gone", "soon gone")
    assert stack.invoke({"key_name": "gone"})["success"] is True
    stack.emulator.delete(stack.namespace_id, "gone")

    # WHEN it is synced with delete_missing
    refused = stack.invoke({"key_name": "gone", "delete_missing": True})

    # THEN deleting 1 of 1 record (100 %) is refused, and the record stays
    assert refused["error"]["type"] == "DELETION_REFUSED"
    assert "1 of the selection's 1 stored records (100.0 %)" in refused["error"]["message"]
    assert stack.item("gone") is not None

    # WHEN it is synced again with force_delete
    forced = stack.invoke({"key_name": "gone", "delete_missing": True, "force_delete": True})

    # THEN the record is deleted (the reply says the key is missing, and what was done)
    assert forced["error"]["type"] == "NOT_FOUND"
    assert forced["error"]["message"].endswith("its DynamoDB record was deleted")
    assert stack.item("gone") is None


@pytest.mark.usefixtures("one_page_per_invocation")
def test_guard_counts_the_whole_run_across_invocations(stack: Stack):
    # GIVEN 40 synced keys; then the first page's 10 keys and 2 of the last page's left
    # KV: 12 of 40 records (30 %) for the whole run, 2 of 10 (20 %) in its last page
    values = synced(stack, 40)
    gone = [f"flags/{i:03d}" for i in range(10)] + ["flags/033", "flags/038"]
    gone_from_kv(stack, *gone)

    # WHEN the namespace is synced with delete_missing, one page per invocation
    with recorded_calls("dynamodb") as calls:
        refused = run_to_the_end(stack, RUN_ALL)

    # THEN each invocation but the last paused, deleting nothing; the last one, judging
    # the whole run, refused it
    assert [r.get("success") for r in refused] == [True, True, False]
    assert refused[-1]["error"]["type"] == "DELETION_REFUSED"
    assert refused[-1]["deletion"]["to_delete"] == 12
    assert refused[-1]["deletion"]["stored"] == 40
    assert set(stack.items()) == set(values)
    # AND the run's pending deletions and its lease are gone with it
    assert held(stack) == []
    assert set(calls) <= granted_dynamodb_operations()

    # WHEN the same run is forced
    def nothing_deleted_yet() -> None:
        # while it pauses, it keeps the first page's deletions for its end
        assert set(stack.items()) == set(values)
        assert any("#DELETE#" in sk for sk in held(stack))

    replies = run_to_the_end(stack, {**RUN_ALL, "force_delete": True}, nothing_deleted_yet)

    # THEN its end deleted the records of every page, the first invocation's included
    assert [r["statistics"]["complete"] for r in replies] == [False, False, True]
    assert [r["statistics"]["records_deleted"] for r in replies] == [0, 0, 12]
    assert replies[-1]["data"]["deletion"]["force_delete"] is True
    assert set(stack.items()) == set(values) - set(gone)
    assert held(stack) == []


@pytest.mark.usefixtures("one_page_per_invocation")
def test_run_under_the_limit_deletes_at_its_end(stack: Stack):
    # GIVEN 40 synced keys, one per listing page of which then left KV (10 %)
    values = synced(stack, 40)
    gone = ["flags/002", "flags/015", "flags/027", "flags/036"]
    gone_from_kv(stack, *gone)

    # WHEN the namespace is synced with delete_missing, one page per invocation
    replies = run_to_the_end(stack, RUN_ALL)

    # THEN the records were deleted only by the last invocation, all four of them
    assert [r["statistics"]["records_deleted"] for r in replies] == [0, 0, 0, 4]
    assert replies[-1]["data"]["deletion"] == {
        "to_delete": 4,
        "stored": 40,
        "max_delete_percent": 25,
        "force_delete": False,
        "refused": None,
        "skipped": None,
    }
    assert set(stack.items()) == set(values) - set(gone)
    assert held(stack) == []


@pytest.mark.usefixtures("one_page_per_invocation")
def test_failed_page_means_the_resumed_run_deletes_nothing(stack: Stack):
    # GIVEN 40 synced keys, one per listing page of which then left KV
    values = synced(stack, 40)
    gone_from_kv(stack, "flags/002", "flags/015", "flags/027", "flags/036")

    # WHEN a run's first invocation syncs a page, its second fails on Cloudflare, and
    # the run is resumed from the failed invocation's cursor to its end
    first = stack.invoke(RUN_ALL)
    stack.emulator.add_fault(status=500, times=-1, path_contains="/keys?limit=10&cursor=")
    failed = stack.invoke({**RUN_ALL, "cursor": first["data"]["next_cursor"]})
    stack.emulator.clear_faults()
    assert failed["error"]["type"] == "API_ERROR"
    rest = run_to_the_end(stack, {**RUN_ALL, "cursor": failed["statistics"]["next_cursor"]})

    # THEN the resumed run completes but deletes nothing, not even what the first
    # invocation found, and says why
    last = rest[-1]
    assert last["success"] is True and last["statistics"]["complete"] is True, last
    assert sum(r["statistics"]["records_deleted"] for r in [first, failed, *rest]) == 0
    assert last["data"]["deletion"]["skipped"] == "a page of this run failed"
    assert set(stack.items()) == set(values)
    assert held(stack) == []
