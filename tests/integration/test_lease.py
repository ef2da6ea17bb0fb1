"""One multi-key run per namespace at a time: the lease, end to end.

A ``key_names``, ``prefix`` or ``all`` run holds the namespace's lease (an item beside
the records) from its first invocation to its last; a second multi-key run meanwhile
fails fast with ``CONFLICT`` (HTTP 409 and ``Retry-After`` on the Function URL), while
the first run's own continuations, and ``key_name`` syncs, go on. The first run is
made to pause after each listing page (``one_page_per_invocation``), in invocations of
ten minutes, so that its lease lasts well beyond the test.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.aws_calls import recorded_calls
from tests.support.function_url import function_url
from tests.support.kv_data import seed
from tests.support.stack import Stack
from tests.support.table import snapshot

LONG_MS = 600_000  # the paused run's invocations: its lease outlives the test


@pytest.fixture(autouse=True)
def paging(monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing pages of 10 keys, and no invocation with the time for a second page."""
    monkeypatch.setattr("kv_sync.pages.LIST_PAGE_SIZE", 10)
    monkeypatch.setattr("kv_sync.engine.MIN_PAGE_SECONDS", 3_600.0)


def now() -> str:
    """The current time as the function writes times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def finish(stack: Stack, event: dict[str, Any], reply: dict[str, Any]) -> dict[str, Any]:
    """Continue the run ``reply`` paused until it ends; its last reply."""
    for _ in range(10):
        cursor = reply["data"]["next_cursor"]
        if not cursor:
            return reply
        reply = stack.invoke({**event, "cursor": cursor}, timeout_ms=LONG_MS)
    raise AssertionError(f"the run did not end: {reply}")


def test_second_run_fails_fast_while_the_first_one_continues(stack: Stack):
    # GIVEN 25 keys (3 listing pages), and a run of the namespace that paused after its
    # first page, holding the namespace's lease
    values = seed(stack, 25)
    before = now()
    first = stack.invoke({"all": True}, timeout_ms=LONG_MS)
    assert first["data"]["next_cursor"], first
    held = stack.lease()
    assert held is not None
    assert before <= held["started_at"] <= now()
    assert held["expires_at"] > datetime.now(UTC).timestamp()
    table_before = snapshot(stack)

    # WHEN other multi-key runs start meanwhile
    with recorded_calls("dynamodb") as calls:
        others = [
            stack.invoke({"all": True}),
            stack.invoke({"prefix": "flags/", "delete_missing": True}),
            stack.invoke({"key_names": ["flags/001", "flags/002"]}),
        ]

    # THEN each fails fast with a retryable CONFLICT naming the first run's start, without
    # a call to Cloudflare or a write: one attempt to take the lease, one read of it
    for other in others:
        assert other["success"] is False
        assert other["error"]["type"] == "CONFLICT"
        assert other["error"]["is_retryable"] is True
        assert other["error"]["message"].startswith(
            f"Another multi-key run has been syncing namespace {stack.namespace_id} "
            f"since {held['started_at']}"
        )
        assert other["statistics"]["cloudflare_api_calls"] == 0
    assert calls == ["PutItem", "Query"] * 3
    assert snapshot(stack) == table_before

    # WHEN a single key is synced meanwhile
    stack.emulator.put(stack.namespace_id, "flags/020", b"changed while the run paused")
    single = stack.invoke({"key_name": "flags/020"})

    # THEN the lease does not hold it up
    assert single["success"] is True, single
    assert single["data"]["record"]["changed"] is True

    # WHEN the first run is continued with its cursor
    last = finish(stack, {"all": True}, first)

    # THEN it went on to its end, and let the lease go
    assert last["success"] is True and last["statistics"]["complete"] is True, last
    values["flags/020"] = b"changed while the run paused"
    assert {key: stack.values()[key] for key in values} == values
    assert stack.lease() is None

    # AND a new multi-key run now starts, under a lease of its own
    again = stack.invoke({"all": True})
    assert again["success"] is True and again["statistics"]["keys_listed"] == 10, again
    taken = stack.lease()
    assert taken is not None and taken["run_id"] != held["run_id"]


def test_function_url_answers_409_with_retry_after(stack: Stack):
    # GIVEN 25 keys, and a signed Function URL in front of the real handler
    seed(stack, 25)
    with function_url() as url:
        # AND a run of the namespace, started through the URL, that paused after a page
        first = url.post({"all": True}, timeout_ms=LONG_MS)
        assert first.status == 200, first.document
        cursor = first.document["data"]["next_cursor"]
        assert cursor
        held = stack.lease()
        assert held is not None

        # WHEN a second run is asked for, by POST and by GET
        posted = url.post({"prefix": "flags/"})
        got = url.get({"all": "true"})

        # THEN both are 409 CONFLICT, with the first run's start and when to retry
        for reply in (posted, got):
            assert reply.status == 409
            assert reply.document["error"]["type"] == "CONFLICT"
            assert f"since {held['started_at']}" in reply.document["error"]["message"]
            retry_after = int(reply.headers["Retry-After"])
            assert 1 <= retry_after <= LONG_MS // 1000

        # WHEN the first run is continued through the URL with its cursor
        replies = [url.post({"all": True, "cursor": cursor}, timeout_ms=LONG_MS)]
        while replies[-1].document["data"]["next_cursor"] and len(replies) < 5:
            next_cursor = replies[-1].document["data"]["next_cursor"]
            replies.append(url.post({"all": True, "cursor": next_cursor}, timeout_ms=LONG_MS))

        # THEN it completes, and the next run is served
        assert [r.status for r in replies] == [200, 200]
        assert replies[-1].document["data"]["complete"] is True
        assert url.get({"all": "true"}).status == 200
    assert len(stack.items()) == 25


def test_lease_of_a_run_that_ended_early_does_not_block(stack: Stack):
    # GIVEN 25 keys and a run that failed on Cloudflare part way (its lease let go)
    seed(stack, 25)
    stack.emulator.add_fault(status=500, times=-1, path_contains="/keys?limit=10&cursor=")
    first = stack.invoke({"all": True}, timeout_ms=LONG_MS)
    second = stack.invoke({"all": True, "cursor": first["data"]["next_cursor"]})
    stack.emulator.clear_faults()
    assert second["error"]["type"] == "API_ERROR"
    assert stack.lease() is None
    # AND a run that paused, whose invocation has ended since: its lease has expired
    paused = stack.invoke({"prefix": "flags/"}, timeout_ms=LONG_MS)
    assert paused["data"]["next_cursor"]
    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"pk": {"S": f"NAMESPACE#{stack.namespace_id}"}, "sk": {"S": "#LEASE"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(datetime.now(UTC).timestamp()) - 1)}},
    )

    # WHEN a new multi-key run starts
    fresh = stack.invoke({"all": True}, timeout_ms=LONG_MS)

    # THEN it takes the lease over and runs
    assert fresh["success"] is True, fresh
    assert fresh["data"]["next_cursor"]
    taken = stack.lease()
    assert taken is not None and taken["selector"] == '{"all": true}'
    last = finish(stack, {"all": True}, fresh)
    assert last["statistics"]["complete"] is True
    assert len(stack.items()) == 25
