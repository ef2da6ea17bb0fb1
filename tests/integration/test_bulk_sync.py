"""Multi-key syncs over real sockets: listings, bulk get, change detection, deletions, cursors."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

import bulk
from tests.integration.conftest import Stack


@pytest.fixture(autouse=True)
def small_pages(monkeypatch):
    # Ten keys a listing page (the API's minimum) so a few dozen keys span pages.
    monkeypatch.setattr(bulk, "LIST_PAGE_SIZE", 10)


@pytest.fixture
def slow_pages(monkeypatch):
    """Every listing page takes at least 1 s more, so a 3.2 s invocation (2.7 s
    before the safety margin) has time for exactly one page, even with 0.6 s of
    set-up on a busy machine: after it, less than MIN_PAGE_SECONDS (2 s) is left."""
    import time

    real = bulk._Run.listing_page

    def slow(self, prefix, position):
        time.sleep(1.0)
        return real(self, prefix, position)

    monkeypatch.setattr(bulk._Run, "listing_page", slow)


def seed(stack: Stack, count: int, prefix: str = "flags/") -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for i in range(count):
        key = f"{prefix}{i:03d}"
        if i % 7 == 3:
            value = bytes([0xFF, 0xFE, i % 256])  # binary: bulk get cannot return it
        elif i % 2:
            value = json.dumps({"n": i, "on": bool(i % 3)}).encode()
        else:
            value = f"text value {i}".encode()
        metadata = {"owner": "team", "rev": i} if i % 5 == 0 else None
        stack.emulator.put(stack.namespace_id, key, value, metadata=metadata)
        values[key] = value
    return values


def table_contents(stack: Stack) -> dict[str, bytes]:
    items: dict[str, bytes] = {}
    kwargs: dict[str, Any] = {
        "TableName": stack.table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"NAMESPACE#{stack.namespace_id}"}},
    }
    while True:
        page = stack.dynamodb.query(**kwargs)
        for item in page["Items"]:
            value = item["value"]
            items[item["key"]["S"]] = value["S"].encode() if "S" in value else value["B"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_whole_namespace_is_copied_page_by_page(stack: Stack):
    # GIVEN 35 keys of mixed kinds (4 listing pages of 10)
    values = seed(stack, 35)

    # WHEN the whole namespace is synced
    response = stack.invoke({"all": True})

    # THEN DynamoDB equals KV, with batched reads
    assert response["success"] is True, response
    stats = response["statistics"]
    assert stats["complete"] is True and stats["next_cursor"] is None
    assert stats["keys_listed"] == stats["keys_fetched"] == stats["records_written"] == 35
    assert table_contents(stack) == values
    binary = sum(1 for i in range(35) if i % 7 == 3)
    # 4 list pages + 4 bulk gets, + for each page holding binary values the bisection
    # calls, + two raw reads per binary key: never one GET per text value
    assert stats["cloudflare_api_calls"] < 4 + 4 + 8 * 4 + 2 * binary
    raw_reads = [r for r in stack.emulator.requests if "/values/" in r.path]
    assert len(raw_reads) == binary
    assert response["data"]["selector"] == {"all": True}


def test_unchanged_resync_issues_no_writes(stack: Stack):
    seed(stack, 35)
    stack.invoke({"all": True})

    response = stack.invoke({"all": True})

    stats = response["statistics"]
    assert stats["records_unchanged"] == 35
    assert stats["records_written"] == 0
    assert stats["dynamodb_writes"] == 0
    assert stats["dynamodb_batches"] >= 4


def test_changes_and_deletions_are_propagated(stack: Stack):
    # GIVEN a synced namespace
    values = seed(stack, 35)
    stack.invoke({"all": True})

    # WHEN two values change and two keys are deleted in KV
    ns = stack.namespace_id
    stack.emulator.put(ns, "flags/004", b"changed four")
    stack.emulator.put(ns, "flags/030", b"changed thirty", metadata={"rev": 99})
    stack.emulator.delete(ns, "flags/010")
    stack.emulator.delete(ns, "flags/034")  # the very last key: the final page's range
    response = stack.invoke({"all": True, "delete_missing": True})

    # THEN exactly those records changed or went away
    stats = response["statistics"]
    assert stats["records_written"] == 2
    assert stats["records_deleted"] == 2
    assert stats["records_unchanged"] == 31
    expected = {k: v for k, v in values.items() if k not in {"flags/010", "flags/034"}}
    expected["flags/004"] = b"changed four"
    expected["flags/030"] = b"changed thirty"
    assert table_contents(stack) == expected


def test_nothing_is_deleted_without_delete_missing(stack: Stack):
    values = seed(stack, 12)
    stack.invoke({"all": True})
    stack.emulator.delete(stack.namespace_id, "flags/005")

    response = stack.invoke({"all": True})

    assert response["statistics"]["records_deleted"] == 0
    assert table_contents(stack) == values


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
    assert set(other) <= set(table_contents(stack))


def test_key_names_use_one_bulk_get_and_report_missing_names(stack: Stack):
    seed(stack, 6)
    stack.emulator.reset_stats()

    response = stack.invoke({"key_names": ["flags/000", "flags/001", "flags/002", "nope"]})

    assert response["success"] is False
    assert response["data"]["failed_keys"] == [
        {"key": "nope", "type": "NOT_FOUND", "message": "Key 'nope' does not exist in KV"}
    ]
    assert response["statistics"]["records_written"] == 3
    bulk_gets = [r for r in stack.emulator.requests if r.path.endswith("/bulk/get")]
    assert len(bulk_gets) == 1


def test_named_key_gone_from_kv_is_deleted_with_delete_missing(stack: Stack):
    seed(stack, 3)
    stack.invoke({"key_names": ["flags/000", "flags/001"]})
    stack.emulator.delete(stack.namespace_id, "flags/001")

    response = stack.invoke({"key_names": ["flags/000", "flags/001"], "delete_missing": True})

    assert response["success"] is True
    assert response["statistics"]["records_deleted"] == 1
    assert "flags/001" not in table_contents(stack)


def test_deadline_returns_cursor_and_the_cursor_finishes_the_run(stack: Stack, slow_pages):
    # GIVEN each page needs more time than a 3.2 s invocation leaves for a second page
    values = seed(stack, 30)

    # WHEN the namespace is synced with little time left
    first = stack.invoke({"all": True}, timeout_ms=3_200)

    # THEN it stops after one page with a cursor
    assert first["success"] is True
    assert first["statistics"]["complete"] is False
    cursor = first["data"]["next_cursor"]
    assert cursor and first["statistics"]["keys_listed"] == 10

    # AND following the cursor completes the same run
    seen = 10
    for _ in range(5):
        step = stack.invoke({"all": True, "cursor": cursor})
        seen += step["statistics"]["keys_listed"]
        if step["statistics"]["complete"]:
            break
        cursor = step["data"]["next_cursor"]
    assert step["statistics"]["complete"] is True
    assert seen == 30
    assert table_contents(stack) == values


def test_cursor_of_another_selector_is_rejected(stack: Stack, slow_pages):
    seed(stack, 15)
    first = stack.invoke({"prefix": "flags/"}, timeout_ms=3_200)
    cursor = first["data"]["next_cursor"]

    response = stack.invoke({"all": True, "cursor": cursor})

    assert response["error"]["type"] == "VALIDATION_ERROR"
    assert response["statistics"]["cloudflare_api_calls"] == 0


def test_value_too_large_fails_that_key_only(stack: Stack):
    seed(stack, 5)
    stack.emulator.put(stack.namespace_id, "flags/huge", os.urandom(600_000))

    response = stack.invoke({"all": True})

    assert response["success"] is False
    assert response["data"]["failed_keys"][0]["key"] == "flags/huge"
    assert response["data"]["failed_keys"][0]["type"] == "VALUE_TOO_LARGE"
    assert response["statistics"]["records_written"] == 5
    assert response["statistics"]["records_failed"] == 1


def test_function_url_partial_failure_is_207(stack: Stack):
    from tests.conftest import load_event

    seed(stack, 2)
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps({"key_names": ["flags/000", "missing"]})

    response = stack.invoke(event)

    assert response["statusCode"] == 207
    assert json.loads(response["body"])["data"]["failed_keys"][0]["key"] == "missing"


def test_listing_failure_stops_without_deleting_and_can_resume(stack: Stack):
    # GIVEN a synced namespace, one key then deleted in KV
    values = seed(stack, 25)
    stack.invoke({"all": True})
    stack.emulator.delete(stack.namespace_id, "flags/024")
    # AND the second listing page keeps failing
    stack.emulator.add_fault(status=500, times=-1, path_contains="/keys?limit=10&cursor=")

    response = stack.invoke({"all": True, "delete_missing": True})

    # THEN the run reports the error with a cursor, and nothing unlisted was deleted
    assert response["error"]["type"] == "API_ERROR"
    assert response["statistics"]["next_cursor"]
    assert response["statistics"]["records_deleted"] == 0
    assert table_contents(stack) == values

    # AND once Cloudflare recovers the cursor finishes the run, deletion included
    stack.emulator.clear_faults()
    resumed = stack.invoke(
        {"all": True, "delete_missing": True, "cursor": response["statistics"]["next_cursor"]}
    )
    assert resumed["statistics"]["complete"] is True
    assert resumed["statistics"]["records_deleted"] == 1


def test_expiring_ttl_is_refreshed_without_a_full_write(stack: Stack):
    seed(stack, 3)
    stack.invoke({"all": True})
    # GIVEN one record whose ttl is within half of RECORD_TTL_DAYS of expiring
    import time

    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"pk": {"S": f"NAMESPACE#{stack.namespace_id}"}, "sk": {"S": "KEY#flags/001"}},
        UpdateExpression="SET #t = :t",
        ExpressionAttributeNames={"#t": "ttl"},
        ExpressionAttributeValues={":t": {"N": str(int(time.time()) + 86_400)}},
    )

    response = stack.invoke({"all": True})

    assert response["statistics"]["records_written"] == 0
    assert response["statistics"]["dynamodb_writes"] == 1
    item = stack.item("flags/001")
    assert item is not None and item["ttl"] > time.time() + 29 * 86_400


def test_client_side_rate_limit_stops_the_run_resumably(stack: Stack, monkeypatch):
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


def test_self_continuation_invokes_the_function_with_the_cursor(
    stack: Stack, monkeypatch, slow_pages
):
    from botocore.stub import ANY, Stubber

    import aws_clients

    seed(stack, 25)
    monkeypatch.setenv("SELF_INVOKE_CONTINUATION", "true")
    client = aws_clients.lambda_client()
    with Stubber(client) as stubber:
        stubber.add_response(
            "invoke",
            {"StatusCode": 202},
            {"FunctionName": ANY, "InvocationType": "Event", "Payload": ANY},
        )
        response = stack.invoke({"prefix": "flags/"}, timeout_ms=3_200)
        stubber.assert_no_pending_responses()

    assert response["data"]["continued"] is True
    assert response["statistics"]["complete"] is False
