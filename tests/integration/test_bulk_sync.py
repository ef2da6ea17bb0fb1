"""Multi-key syncs over real sockets: listings, bulk get, change detection, deletions, cursors."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.support.aws_calls import recorded_calls
from tests.support.function import load_event
from tests.support.iam import WRITE_OPERATIONS, granted_dynamodb_operations
from tests.support.kv_data import seed
from tests.support.stack import Stack

DAY = 86_400


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten keys a listing page (the API's minimum) so a few dozen keys span pages.
    from kv_sync import pages

    monkeypatch.setattr(pages, "LIST_PAGE_SIZE", 10)


@pytest.fixture
def one_page_per_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """No invocation has the time a second page needs: every run stops after its first."""
    from kv_sync import engine

    monkeypatch.setattr(engine, "MIN_PAGE_SECONDS", 3_600.0)


def test_whole_namespace_is_copied_page_by_page(stack: Stack):
    # GIVEN 35 keys of mixed kinds (4 listing pages of 10)
    values = seed(stack, 35)

    # WHEN the whole namespace is synced
    with recorded_calls("dynamodb") as calls:
        response = stack.invoke({"all": True})

    # THEN DynamoDB equals KV, with batched reads
    assert response["success"] is True, response
    stats = response["statistics"]
    assert stats["complete"] is True and stats["next_cursor"] is None
    assert stats["keys_listed"] == stats["keys_fetched"] == stats["records_written"] == 35
    assert stats["dynamodb_writes"] == 35
    assert stack.values() == values
    binary = sum(1 for i in range(35) if i % 7 == 3)
    # 4 list pages + 4 bulk gets, + for each page holding binary values the bisection
    # calls, + two raw reads per binary key: never one GET per text value
    assert stats["cloudflare_api_calls"] < 4 + 4 + 8 * 4 + 2 * binary
    raw_reads = [r for r in stack.emulator.requests if "/values/" in r.path]
    assert len(raw_reads) == binary
    assert response["data"]["selector"] == {"all": True}
    # AND the run took the namespace's lease first, recorded its sync state and released
    # the lease last; in between, one Query per page read the stored versions, then one
    # write per record
    assert (calls[0], *calls[-2:]) == ("PutItem", "UpdateItem", "DeleteItem")
    assert stats["state_writes"] == 3
    assert calls[1:-2].count("Query") == stats["dynamodb_batches"] == 4
    assert sum(calls[1:-2].count(write) for write in WRITE_OPERATIONS) == 35
    assert len(calls) == 1 + 4 + 35 + 2
    assert set(calls) <= granted_dynamodb_operations()


def test_unchanged_resync_issues_no_writes(stack: Stack):
    # GIVEN a synced namespace
    seed(stack, 35)
    first = stack.invoke({"all": True})
    before = stack.items()

    # WHEN it is synced again, nothing having changed
    with recorded_calls("dynamodb") as calls:
        response = stack.invoke({"all": True})

    # THEN every record is unchanged and no record was written, synced_at included: the
    # run's only writes took its lease, recorded its sync state and released the lease
    stats = response["statistics"]
    assert response["data"]["message"] == (
        "Synced 35 key(s): 0 written, 35 unchanged, 0 deleted, 0 failed; complete"
    )
    assert stats["records_unchanged"] == 35
    assert stats["records_written"] == 0
    assert stats["dynamodb_writes"] == 0
    assert stats["dynamodb_batches"] >= 4
    assert stats["state_writes"] == 3
    assert [call for call in calls if call != "Query"] == ["PutItem", "UpdateItem", "DeleteItem"]
    assert stack.items() == before
    assert first["statistics"]["records_written"] == 35


def test_changes_and_deletions_are_propagated(stack: Stack):
    # GIVEN a synced namespace
    values = seed(stack, 35)
    stack.invoke({"all": True})
    before = stack.items()

    # WHEN two values change and two keys are deleted in KV
    ns = stack.namespace_id
    stack.emulator.put(ns, "flags/004", b"changed four")
    stack.emulator.put(ns, "flags/030", b"changed thirty", metadata={"rev": 99})
    stack.emulator.delete(ns, "flags/010")
    stack.emulator.delete(ns, "flags/034")  # the very last key: the final page's range
    response = stack.invoke({"all": True, "delete_missing": True})

    # THEN exactly those records changed or went away, in one write each
    stats = response["statistics"]
    assert stats["records_written"] == 2
    assert stats["records_deleted"] == 2
    assert stats["records_unchanged"] == 31
    assert stats["dynamodb_writes"] == 4
    expected = {k: v for k, v in values.items() if k not in {"flags/010", "flags/034"}}
    expected["flags/004"] = b"changed four"
    expected["flags/030"] = b"changed thirty"
    assert stack.values() == expected
    # AND the changed records kept their created_at; the others were not touched
    after = stack.items()
    assert after["flags/030"]["metadata"] == {"rev": 99}
    assert after["flags/004"]["created_at"] == before["flags/004"]["created_at"]
    assert after["flags/004"]["updated_at"] > before["flags/004"]["updated_at"]
    assert after["flags/005"] == before["flags/005"]


def test_nothing_is_deleted_without_delete_missing(stack: Stack):
    # GIVEN a synced namespace, one key then deleted in KV
    values = seed(stack, 12)
    stack.invoke({"all": True})
    stack.emulator.delete(stack.namespace_id, "flags/005")

    # WHEN it is synced without delete_missing
    response = stack.invoke({"all": True})

    # THEN the record of the deleted key stays
    assert response["statistics"]["records_deleted"] == 0
    assert stack.values() == values


def test_prefix_sync_touches_only_its_prefix(stack: Stack):
    # GIVEN keys under two prefixes, both synced once
    seed(stack, 12, prefix="flags/")
    other = seed(stack, 5, prefix="config/")
    stack.invoke({"all": True})

    # WHEN a config key is deleted and only flags/ is synced with delete_missing
    stack.emulator.delete(stack.namespace_id, "config/001")
    response = stack.invoke({"prefix": "flags/", "delete_missing": True})

    # THEN flags/ was listed and nothing outside it was deleted
    assert response["statistics"]["keys_listed"] == 12
    assert response["statistics"]["records_deleted"] == 0
    assert response["data"]["selector"] == {"prefix": "flags/"}
    assert set(other) <= set(stack.values())


def test_key_names_use_one_bulk_get_and_report_missing_names(stack: Stack):
    # GIVEN six keys in KV
    seed(stack, 6)
    stack.emulator.reset_stats()

    # WHEN three of them and one missing name are synced
    with recorded_calls("dynamodb") as calls:
        response = stack.invoke({"key_names": ["flags/000", "flags/001", "flags/002", "nope"]})

    # THEN one bulk get and one BatchGetItem served them all; the missing one failed
    assert response["success"] is False
    assert response["data"]["failed_keys"] == [
        {
            "key": "nope",
            "type": "NOT_FOUND",
            "message": "Key 'nope' does not exist in the KV namespace",
        }
    ]
    assert response["statistics"]["records_written"] == 3
    bulk_gets = [r for r in stack.emulator.requests if r.path.endswith("/bulk/get")]
    assert len(bulk_gets) == 1
    # (between taking the run's lease and releasing it)
    assert calls[:2] == ["PutItem", "BatchGetItem"] and calls[-1] == "DeleteItem"
    assert len(calls) == 6 and set(calls[2:-1]) <= set(WRITE_OPERATIONS)
    assert response["statistics"]["dynamodb_writes"] == 3
    assert response["statistics"]["state_writes"] == 2


def test_named_key_gone_from_kv_is_deleted_with_delete_missing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    # GIVEN two synced keys, one then deleted in KV, and a deletion guard that lets a
    # run delete every record it selects
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")
    seed(stack, 3)
    stack.invoke({"key_names": ["flags/000", "flags/001"]})
    stack.emulator.delete(stack.namespace_id, "flags/001")

    # WHEN both are synced with delete_missing
    response = stack.invoke({"key_names": ["flags/000", "flags/001"], "delete_missing": True})

    # THEN the gone key's record is deleted, which is not a failure
    assert response["success"] is True
    assert response["statistics"]["records_deleted"] == 1
    assert response["statistics"]["records_unchanged"] == 1
    assert "flags/001" not in stack.values()


def test_deadline_returns_cursor_and_the_cursor_finishes_the_run(stack: Stack):
    # GIVEN 30 keys and listing pages that take over a second each
    values = seed(stack, 30)
    stack.emulator.add_fault(delay=1.0, times=-1, path_contains="/keys")

    # WHEN the namespace is synced in a 3.2 s invocation (2.7 s before the safety
    # margin): after one page, less than the 2 s a page may need is left
    first = stack.invoke({"all": True}, timeout_ms=3_200)

    # THEN it stops after that one page with a cursor
    assert first["success"] is True, first
    assert first["statistics"]["complete"] is False
    assert first["data"]["message"].endswith(
        "stopped before the deadline; pass next_cursor to continue"
    )
    cursor = first["data"]["next_cursor"]
    assert cursor and first["statistics"]["keys_listed"] == 10
    assert first["statistics"]["next_cursor"] == cursor

    # AND following the cursor completes the same run
    stack.emulator.clear_faults()
    seen = 10
    for _ in range(5):
        step = stack.invoke({"all": True, "cursor": cursor})
        seen += step["statistics"]["keys_listed"]
        if step["statistics"]["complete"]:
            break
        cursor = step["data"]["next_cursor"]
    assert step["statistics"]["complete"] is True
    assert seen == 30
    assert stack.values() == values


@pytest.mark.usefixtures("one_page_per_invocation")
def test_cursor_of_another_selector_is_rejected(stack: Stack):
    # GIVEN an unfinished prefix run and its cursor
    seed(stack, 15)
    first = stack.invoke({"prefix": "flags/"})
    cursor = first["data"]["next_cursor"]
    assert cursor

    # WHEN the cursor is passed with another selector
    response = stack.invoke({"all": True, "cursor": cursor})

    # THEN it is refused before any call
    assert response["error"]["type"] == "VALIDATION_ERROR"
    assert response["statistics"]["cloudflare_api_calls"] == 0


def test_value_too_large_fails_that_key_only(stack: Stack):
    # GIVEN five ordinary keys and one value that cannot fit an item, even compressed
    seed(stack, 5)
    stack.emulator.put(stack.namespace_id, "flags/huge", os.urandom(600_000))

    # WHEN the namespace is synced
    response = stack.invoke({"all": True})

    # THEN only that key failed
    assert response["success"] is False
    assert response["data"]["failed_keys"][0]["key"] == "flags/huge"
    assert response["data"]["failed_keys"][0]["type"] == "VALUE_TOO_LARGE"
    assert response["statistics"]["records_written"] == 5
    assert response["statistics"]["records_failed"] == 1
    assert "flags/huge" not in stack.values()


def test_function_url_partial_failure_is_207(stack: Stack):
    # GIVEN a Function URL POST naming a present and a missing key
    seed(stack, 2)
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps({"key_names": ["flags/000", "missing"]})

    # WHEN it is handled
    response = stack.invoke(event)

    # THEN 207, listing the missing key
    assert response["statusCode"] == 207
    assert json.loads(response["body"])["data"]["failed_keys"][0]["key"] == "missing"


def test_listing_failure_stops_and_its_resumed_run_deletes_nothing(stack: Stack):
    # GIVEN a synced namespace, one key then deleted in KV
    values = seed(stack, 25)
    stack.invoke({"all": True})
    stack.emulator.delete(stack.namespace_id, "flags/024")
    # AND the second listing page keeps failing
    stack.emulator.add_fault(status=500, times=-1, path_contains="/keys?limit=10&cursor=")

    # WHEN the namespace is synced with delete_missing
    response = stack.invoke({"all": True, "delete_missing": True})

    # THEN the run reports the error with a cursor, and nothing unlisted was deleted
    assert response["error"]["type"] == "API_ERROR"
    assert response["statistics"]["next_cursor"]
    assert response["statistics"]["records_deleted"] == 0
    assert stack.values() == values

    # AND once Cloudflare recovers the cursor finishes the run, but deletes nothing: a
    # run one of whose pages failed cannot vouch for its listing
    stack.emulator.clear_faults()
    resumed = stack.invoke(
        {"all": True, "delete_missing": True, "cursor": response["statistics"]["next_cursor"]}
    )
    assert resumed["success"] is True, resumed
    assert resumed["statistics"]["complete"] is True
    assert resumed["statistics"]["records_deleted"] == 0
    assert resumed["data"]["deletion"]["skipped"] == "a page of this run failed"
    assert "flags/024" in stack.values()

    # AND the next run, whose pages all succeed, deletes the record
    again = stack.invoke({"all": True, "delete_missing": True})
    assert again["statistics"]["records_deleted"] == 1
    assert again["data"]["deletion"]["skipped"] is None
    assert "flags/024" not in stack.values()


def test_expiring_ttl_is_refreshed_without_a_full_write(stack: Stack):
    # GIVEN a synced namespace with one record whose ttl is within half of
    # RECORD_TTL_DAYS (30) of expiring
    seed(stack, 3)
    stack.invoke({"all": True})
    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"pk": {"S": f"NAMESPACE#{stack.namespace_id}"}, "sk": {"S": "KEY#flags/001"}},
        UpdateExpression="SET #t = :t",
        ExpressionAttributeNames={"#t": "ttl"},
        ExpressionAttributeValues={":t": {"N": str(int(time.time()) + DAY)}},
    )
    before = stack.items()

    # WHEN the namespace is synced again, unchanged
    response = stack.invoke({"all": True})

    # THEN that one record's ttl was extended, in the run's only write
    assert response["statistics"]["records_written"] == 0
    assert response["statistics"]["records_unchanged"] == 3
    assert response["statistics"]["dynamodb_writes"] == 1
    after = stack.items()
    assert after["flags/001"]["ttl"] > time.time() + 29 * DAY
    assert after["flags/001"]["updated_at"] == before["flags/001"]["updated_at"]
    assert after["flags/000"] == before["flags/000"]


def test_client_side_rate_limit_stops_the_run_resumably(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    # GIVEN a limit of 5 requests and 40 text keys (2 requests a page: list + bulk get)
    monkeypatch.setenv("CLOUDFLARE_REQUESTS_PER_5_MINUTES", "5")
    for i in range(40):
        stack.emulator.put(stack.namespace_id, f"k{i:02d}", f"v{i}")

    # WHEN the namespace is synced inside a 5 s invocation
    response = stack.invoke({"all": True}, timeout_ms=5_000)

    # THEN the run stops at the limit, instead of waiting out the 5-minute window,
    # with a cursor after the last complete page
    assert response["error"]["type"] == "RATE_LIMITED"
    assert response["error"]["is_retryable"] is True
    assert response["statistics"]["cloudflare_api_calls"] == 5
    assert response["statistics"]["records_written"] == 20
    assert response["statistics"]["next_cursor"]
    assert len(stack.emulator.requests) == 5
