"""Multi-key runs (``kv_sync.engine``) through the handler: pages, cursors, replies.

The namespace is a ``FakeNamespace`` served by ``responses``; listing pages are
made small by lowering ``pages.LIST_PAGE_SIZE``. What is written for each key
(the write policy) is ``test_write_policy.py``'s subject; deletions are
``test_deletions.py``'s and ``test_deletion_guard.py``'s, the lease ``test_lease.py``'s.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from kv_sync import cursor, engine, pages, runtime
from kv_sync.events import parse_event
from kv_sync.model import SyncStats
from local.lambda_context import LambdaContext
from tests.support.cloudflare import BULK_GET_URL, stored_items
from tests.support.function import load_event
from tests.support.sync_runs import invoke, kv_values, lease, seed, values

MULTI_KEY_STATISTICS = {
    "execution_time_ms",
    "keys_listed",
    "keys_fetched",
    "records_written",
    "records_unchanged",
    "records_deleted",
    "records_failed",
    "records_superseded",
    "cloudflare_api_calls",
    "cloudflare_retries",
    "dynamodb_batches",
    "dynamodb_writes",
    "state_writes",
    "records_processed",
    "records_stored",
    "success_rate",
    "next_cursor",
    "complete",
}


@pytest.fixture
def progress() -> Iterator[list[dict[str, int]]]:
    """What a progress listener saw after each page."""
    seen: list[dict[str, int]] = []

    def listener(stats: SyncStats) -> None:
        seen.append(
            {
                "keys_listed": stats.keys_listed,
                "keys_fetched": stats.keys_fetched,
                "records_written": stats.records_written,
                "api_calls": stats.calls.api_calls,
            }
        )

    engine.add_progress_listener(listener)
    yield seen
    engine.remove_progress_listener(listener)


# ------------------------------------------------------------------ whole runs


def test_all_copies_the_whole_namespace_page_by_page(aws, kv, small_pages):
    # GIVEN seven keys, including a binary one, over four listing pages
    seed(kv, [f"k{i}" for i in range(6)])
    kv.put("blob", b"\xff\xfe\x00")

    # WHEN the whole namespace is synced
    reply = invoke({"all": True})

    # THEN every key is stored in one complete run
    assert reply["success"] is True
    data, statistics = reply["data"], reply["statistics"]
    assert (
        data["message"] == "Synced 7 key(s): 7 written, 0 unchanged, 0 deleted, 0 failed; complete"
    )
    assert data["selector"] == {"all": True}
    assert data["complete"] is True
    assert data["next_cursor"] is None
    assert "continued" not in data
    assert data["failed_keys"] == []
    assert data["failed_keys_truncated"] is False
    assert set(statistics) == MULTI_KEY_STATISTICS
    assert statistics["keys_listed"] == statistics["keys_fetched"] == 7
    assert statistics["records_written"] == statistics["dynamodb_writes"] == 7
    assert statistics["dynamodb_batches"] == 4  # one Query per listing page
    assert statistics["success_rate"] == 1.0
    stored = stored_items(aws)
    assert bytes(stored.pop("blob")["value"]) == b"\xff\xfe\x00"
    assert {key: item["value"] for key, item in stored.items()} == {
        key: entry.value.decode("utf-8") for key, entry in kv.entries.items() if key != "blob"
    }


def test_progress_listeners_hear_after_every_page(aws, kv, small_pages, progress):
    # GIVEN five keys over three listing pages, and a progress listener
    seed(kv, [f"k{i}" for i in range(5)])

    # WHEN the namespace is synced
    invoke({"all": True})

    # THEN the listener was called once per page, with statistics that only grow
    assert [seen["keys_listed"] for seen in progress] == [2, 4, 5]
    assert [seen["records_written"] for seen in progress] == [2, 4, 5]
    calls = [seen["api_calls"] for seen in progress]
    assert calls == sorted(calls) and len(set(calls)) == 3


def test_a_removed_listener_hears_nothing(aws, kv):
    # GIVEN a progress listener added and removed again
    seen: list[int] = []

    def listener(stats: SyncStats) -> None:
        seen.append(stats.keys_listed)

    engine.add_progress_listener(listener)
    engine.remove_progress_listener(listener)
    seed(kv, ["a"])

    # WHEN a run syncs the namespace
    invoke({"all": True})

    # THEN the listener was not called
    assert seen == []


def test_prefix_syncs_only_keys_under_it(aws, kv):
    # GIVEN keys under flags/ and elsewhere
    seed(kv, ["flags/a", "flags/b", "flagsx", "other/a"])

    # WHEN the prefix is synced
    reply = invoke({"prefix": "flags/"})

    # THEN only its keys are stored, and the reply echoes the selector
    assert sorted(values(aws)) == ["flags/a", "flags/b"]
    assert reply["data"]["selector"] == {"prefix": "flags/"}
    assert reply["statistics"]["keys_listed"] == 2


def test_unchanged_resync_of_many_keys_writes_nothing(aws, kv, small_pages, dynamodb_items):
    # GIVEN a namespace synced once
    seed(kv, [f"k{i}" for i in range(5)])
    invoke({"all": True})
    dynamodb_items.clear()

    # WHEN it is synced again without changes
    reply = invoke({"all": True})

    # THEN every key is unchanged and only the page reads touched records
    statistics = reply["statistics"]
    assert statistics["records_unchanged"] == 5
    assert statistics["records_written"] == statistics["dynamodb_writes"] == 0
    assert statistics["records_stored"] == 5
    assert {operation for operation, item in dynamodb_items if item == "record"} == {"Query"}
    # AND the run's only writes were its lease, taken and released
    lease_calls = [operation for operation, item in dynamodb_items if item == "lease"]
    assert lease_calls == ["PutItem", "DeleteItem"]
    assert lease(aws) is None
    assert reply["data"]["message"].startswith("Synced 5 key(s): 0 written, 5 unchanged")


def test_key_names_are_read_in_one_bulk_get_and_one_batch_read(aws, kv, dynamodb_calls):
    # GIVEN three named keys
    seed(kv, ["a", "b", "c"])

    # WHEN they are synced by name
    reply = invoke({"key_names": ["c", "a", "b"]})

    # THEN one bulk get and one BatchGetItem served them all
    assert reply["success"] is True
    assert reply["data"]["selector"] == {"key_names": ["c", "a", "b"]}
    assert reply["statistics"]["cloudflare_api_calls"] == 1
    assert dynamodb_calls.count("BatchGetItem") == 1
    assert reply["statistics"]["keys_listed"] == 0
    assert sorted(values(aws)) == ["a", "b", "c"]


def test_more_than_100_names_are_read_100_at_a_time(aws, kv, cf, dynamodb_calls):
    # GIVEN 101 named keys, the first and the last of which exist
    names = [f"key-{i:03d}" for i in range(101)]
    seed(kv, [names[0], names[-1]])

    # WHEN they are synced by name
    reply = invoke({"key_names": names})

    # THEN bulk gets and batch reads took at most 100 keys each, and every key was settled
    bulk_gets = [c for c in cf.calls if c.request.url == BULK_GET_URL]
    assert sorted(len(json.loads(c.request.body)["keys"]) for c in bulk_gets) == [1, 100]
    assert dynamodb_calls.count("BatchGetItem") == 2
    assert reply["statistics"]["records_written"] == 2
    assert reply["statistics"]["records_failed"] == 99
    assert reply["data"]["complete"] is True


def test_missing_names_are_listed_as_failures(aws, kv):
    # GIVEN two of four named keys do not exist
    seed(kv, ["a", "b"])

    # WHEN all four are synced
    reply = invoke({"key_names": ["a", "gone-1", "b", "gone-2"]})

    # THEN the others are stored, and the missing ones are NOT_FOUND failures
    assert reply["success"] is False
    assert reply["data"]["failed_keys"] == [
        {
            "key": "gone-1",
            "type": "NOT_FOUND",
            "message": "Key 'gone-1' does not exist in the KV namespace",
        },
        {
            "key": "gone-2",
            "type": "NOT_FOUND",
            "message": "Key 'gone-2' does not exist in the KV namespace",
        },
    ]
    statistics = reply["statistics"]
    assert statistics["records_written"] == 2
    assert statistics["records_failed"] == 2
    assert statistics["success_rate"] == 0.5
    assert "2 written" in reply["data"]["message"]
    assert "2 failed" in reply["data"]["message"]
    assert sorted(values(aws)) == ["a", "b"]


def test_failures_are_counted_but_listed_only_up_to_50(aws, kv):
    # GIVEN 60 named keys, none of which exists
    names = [f"gone-{i:02d}" for i in range(60)]

    # WHEN they are synced
    reply = invoke({"key_names": names})

    # THEN all are counted, the first 50 listed in order, and the list says it is cut
    assert reply["statistics"]["records_failed"] == 60
    assert [f["key"] for f in reply["data"]["failed_keys"]] == names[:50]
    assert reply["data"]["failed_keys_truncated"] is True
    assert reply["statistics"]["success_rate"] == 0.0
    assert "60 failed" in reply["data"]["message"]


def test_function_url_answers_207_when_some_keys_failed(aws, kv):
    # GIVEN a POST naming one key that exists and one that does not
    seed(kv, ["a"])
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps({"key_names": ["a", "gone"]})

    # WHEN it is handled
    response = invoke(event)

    # THEN the status is 207 Multi-Status, and the body lists the failed key
    assert response["statusCode"] == 207
    document = json.loads(response["body"])
    assert [f["key"] for f in document["data"]["failed_keys"]] == ["gone"]


def test_function_url_get_syncs_a_prefix(aws, kv):
    # GIVEN a Function URL GET with ?prefix=flags/
    seed(kv, ["flags/a", "other"])
    event = load_event("lambdaFunctionUrlIAMEventGet.json")
    event["queryStringParameters"] = {"prefix": "flags/"}
    event["rawQueryString"] = "prefix=flags/"

    # WHEN it is handled
    response = invoke(event)

    # THEN the keys under the prefix are stored, and the reply is a 200
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["data"]["complete"] is True
    assert sorted(values(aws)) == ["flags/a"]


def test_a_value_too_large_fails_that_key_only(aws, kv):
    # GIVEN two ordinary keys and one value that cannot fit a DynamoDB item
    seed(kv, ["a", "b"])
    kv.put("huge", random.Random(3).randbytes(450_000))

    # WHEN the namespace is synced
    reply = invoke({"all": True})

    # THEN the others are stored, and that key is listed as VALUE_TOO_LARGE
    assert sorted(values(aws)) == ["a", "b"]
    assert [(f["key"], f["type"]) for f in reply["data"]["failed_keys"]] == [
        ("huge", "VALUE_TOO_LARGE")
    ]
    assert reply["statistics"]["records_failed"] == 1
    assert reply["statistics"]["success_rate"] == pytest.approx(0.6667, abs=1e-4)


# ---------------------------------------------------------- stopping and cursors


def test_a_run_out_of_time_returns_a_cursor_that_finishes_it(
    aws, kv, small_pages, one_page_per_invocation
):
    # GIVEN five keys over three pages, with time for one page per invocation
    seed(kv, [f"k{i}" for i in range(5)])
    event: dict[str, Any] = {"all": True}

    # WHEN the run is continued with each reply's next_cursor until complete
    replies = [invoke(event)]
    while not replies[-1]["data"]["complete"]:
        assert len(replies) < 10, "the run never completed"
        replies.append(invoke({**event, "cursor": replies[-1]["data"]["next_cursor"]}))

    # THEN each invocation did one page, said how to continue, and together they
    # copied everything exactly once
    assert len(replies) == 3
    first = replies[0]
    assert first["success"] is True
    assert first["data"]["next_cursor"] == first["statistics"]["next_cursor"]
    assert first["statistics"]["complete"] is False
    assert first["data"]["message"].endswith(
        "stopped before the deadline; pass next_cursor to continue"
    )
    assert [r["statistics"]["keys_listed"] for r in replies] == [2, 2, 1]
    assert sum(r["statistics"]["records_written"] for r in replies) == 5
    assert replies[-1]["data"]["next_cursor"] is None
    assert values(aws) == kv_values(kv)


def test_named_keys_continue_from_their_cursor(aws, kv, monkeypatch, one_page_per_invocation):
    # GIVEN five named keys read two at a time, one page per invocation
    monkeypatch.setattr(pages, "NAMES_PAGE_SIZE", 2)
    names = [f"n{i}" for i in range(5)]
    seed(kv, names)

    # WHEN the run is followed to its end
    reply = invoke({"key_names": names})
    runs = 1
    while not reply["data"]["complete"]:
        reply = invoke({"key_names": names, "cursor": reply["data"]["next_cursor"]})
        runs += 1

    # THEN it took three invocations and every key was synced
    assert runs == 3
    assert sorted(values(aws)) == names


def test_the_first_page_runs_even_with_little_time_left(aws, kv, small_pages):
    # GIVEN an invocation with 2.5 s: less than MIN_PAGE_SECONDS after the safety margin
    seed(kv, [f"k{i}" for i in range(5)])

    # WHEN the namespace is synced
    reply = invoke({"all": True}, LambdaContext(timeout_ms=2_500))

    # THEN one page was done, and the reply says how to continue
    assert reply["statistics"]["keys_listed"] == 2
    assert reply["data"]["complete"] is False
    assert reply["data"]["next_cursor"]


def test_later_pages_start_only_with_one_and_a_half_slowest_pages_left(
    aws, kv, small_pages, monkeypatch
):
    # GIVEN 20 keys (10 pages) and a clock on which every listing page takes 10 s,
    # in an invocation of 60 s (3 s of which are kept as the safety margin)
    now = [1_000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    kv.before_list.append(lambda: now.__setitem__(0, now[0] + 10))
    seed(kv, [f"k{i:02d}" for i in range(20)])
    context = LambdaContext(timeout_ms=60_000, clock=lambda: now[0])

    # WHEN the namespace is synced
    reply = invoke({"all": True}, context)

    # THEN after 50 s only 7 s are left: less than 1.5 x the slowest page (15 s),
    # though more than MIN_PAGE_SECONDS, so the run stopped after five pages
    assert reply["statistics"]["keys_listed"] == 10
    assert reply["data"]["complete"] is False
    assert reply["data"]["next_cursor"]


def test_a_cursor_past_the_end_of_the_names_is_not_a_crash(aws, kv):
    # GIVEN a genuine cursor of a two-name run whose offset points past its names
    seed(kv, ["a", "b"])
    event: dict[str, Any] = {"key_names": ["a", "b"]}
    past_the_end = cursor.encode(cursor.Position(offset=7), None, parse_event(event, "unused"))

    # WHEN it is sent
    reply = invoke({**event, "cursor": past_the_end})

    # THEN it is refused as bad input, or taken as a finished run; never a crash
    if reply["success"]:
        assert reply["data"]["complete"] is True
        assert reply["statistics"]["records_written"] == 0
    else:
        assert reply["error"]["type"] == "VALIDATION_ERROR"


def test_a_cursor_of_another_selector_is_bad_input(
    aws, kv, cf, small_pages, one_page_per_invocation
):
    # GIVEN a next_cursor from a prefix run
    seed(kv, ["flags/a", "flags/b", "flags/c"])
    cursor = invoke({"prefix": "flags/"})["data"]["next_cursor"]
    calls_before = len(cf.calls)

    # WHEN it is sent with the whole-namespace selector
    reply = invoke({"all": True, "cursor": cursor})

    # THEN it is refused as bad input before anything is read
    assert reply["success"] is False
    assert reply["error"]["type"] == "VALIDATION_ERROR"
    assert "cursor belongs to another request" in reply["error"]["message"]
    assert len(cf.calls) == calls_before


@pytest.mark.parametrize(
    "cursor", ["not a cursor!", "W1sxLDJdXQ", "eyJ2IjoxLCJzIjoieCIsIm8iOkluZmluaXR5fQ"]
)
def test_a_forged_cursor_is_bad_input(aws, cf, cursor):
    # GIVEN a cursor this function never issued
    # WHEN it is sent
    reply = invoke({"all": True, "cursor": cursor})

    # THEN it is a VALIDATION_ERROR and nothing reached Cloudflare
    assert reply["error"]["type"] == "VALIDATION_ERROR"
    assert len(cf.calls) == 0


def test_a_forged_cursor_through_the_function_url_is_400(aws, cf):
    # GIVEN a Function URL GET with a forged cursor
    event = load_event("lambdaFunctionUrlIAMEventGet.json")
    event["queryStringParameters"] = {"all": "true", "cursor": "forged"}
    event["rawQueryString"] = "all=true&cursor=forged"

    # WHEN it is handled
    response = invoke(event)

    # THEN the answer is 400 VALIDATION_ERROR
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["type"] == "VALIDATION_ERROR"


def test_a_bulk_get_failure_keeps_what_earlier_pages_did(aws, kv, small_pages, monkeypatch):
    # GIVEN Cloudflare failing bulk gets after the first page's
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    seed(kv, [f"k{i}" for i in range(5)])
    kv.fail_after("bulk_get", 1)

    # WHEN the namespace is synced
    reply = invoke({"all": True})

    # THEN the error document reports the first page's work and where to resume
    assert reply["error"]["type"] == "API_ERROR"
    assert reply["statistics"]["records_written"] == 2
    assert sorted(values(aws)) == ["k0", "k1"]
    kv.recover()
    rest = invoke({"all": True, "cursor": reply["statistics"]["next_cursor"]})
    assert rest["statistics"]["records_written"] == 3
    assert values(aws) == kv_values(kv)


def test_a_throttled_write_fails_its_page_and_the_cursor_redoes_it(aws, kv, small_pages):
    # GIVEN DynamoDB still throttling the write of k3 after botocore's retries, once
    seed(kv, [f"k{i}" for i in range(5)])
    throttled: list[str] = []

    def throttle(params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
        if (body.get("Key") or body["Item"])["sk"]["S"] == "KEY#k3" and not throttled:
            throttled.append("k3")
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}
            return (type("Http", (), {"status_code": 400})(), error)
        return None

    events = runtime.client("dynamodb").meta.events
    events.register("before-call.dynamodb.PutItem", throttle, unique_id="throttle-k3")
    try:
        # WHEN the namespace is synced
        reply = invoke({"all": True})
    finally:
        events.unregister("before-call.dynamodb.PutItem", unique_id="throttle-k3")

    # THEN the run stops on that page with a retryable error, before moving past k3
    assert reply["error"]["type"] == "STORAGE_ERROR"
    assert reply["error"]["is_retryable"] is True
    assert "k3" not in values(aws)
    # AND its cursor redoes the page, so that nothing is left behind
    rest = invoke({"all": True, "cursor": reply["statistics"]["next_cursor"]})
    assert rest["success"] is True
    assert values(aws) == kv_values(kv)


def test_client_side_rate_limit_stops_the_run_resumably(aws, kv, small_pages, monkeypatch):
    # GIVEN a container budget of 3 Cloudflare requests per 5 minutes, and a
    # namespace whose sync takes more (a listing and a bulk get per page)
    monkeypatch.setenv("CLOUDFLARE_REQUESTS_PER_5_MINUTES", "3")
    seed(kv, [f"k{i}" for i in range(5)])

    # WHEN the namespace is synced
    reply = invoke({"all": True})

    # THEN the run stops with RATE_LIMITED, keeps what it did, and says where to resume
    assert reply["success"] is False
    assert reply["error"]["type"] == "RATE_LIMITED"
    assert reply["error"]["is_retryable"] is True
    assert "CLOUDFLARE_REQUESTS_PER_5_MINUTES" in reply["error"]["message"]
    statistics = reply["statistics"]
    assert statistics["cloudflare_api_calls"] == 3
    assert statistics["records_written"] == 2
    assert statistics["next_cursor"]
    assert statistics["complete"] is False

    # AND once the budget is back, the cursor finishes the run
    monkeypatch.setenv("CLOUDFLARE_REQUESTS_PER_5_MINUTES", "1000")
    rest = invoke({"all": True, "cursor": statistics["next_cursor"]})
    assert rest["data"]["complete"] is True
    assert values(aws) == kv_values(kv)


def test_rate_limited_through_the_function_url_is_503_with_retry_after(
    aws, kv, small_pages, monkeypatch
):
    # GIVEN a container budget of one Cloudflare request, and a POST syncing the namespace
    monkeypatch.setenv("CLOUDFLARE_REQUESTS_PER_5_MINUTES", "1")
    seed(kv, [f"k{i}" for i in range(5)])
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps({"all": True})

    # WHEN it is handled
    response = invoke(event)

    # THEN the answer is 503 RATE_LIMITED with a Retry-After of at most the window
    assert response["statusCode"] == 503
    assert 1 <= int(response["headers"]["Retry-After"]) <= 300
    assert json.loads(response["body"])["error"]["type"] == "RATE_LIMITED"


# ------------------------------------------------------- the caller continues the run


@pytest.fixture
def lambda_invokes() -> Iterator[list[dict[str, Any]]]:
    """The function's Lambda client, stubbed; the payload of every Invoke it sends."""
    client = runtime.client("lambda")
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(json.loads(params["Payload"]))

    client.meta.events.register("provide-client-params.lambda.Invoke", record)
    with Stubber(client):
        yield sent
    client.meta.events.unregister("provide-client-params.lambda.Invoke", record)


def test_an_unfinished_run_leaves_continuing_to_its_caller(
    aws, kv, small_pages, one_page_per_invocation, lambda_invokes
):
    # GIVEN a run that stops after one of its pages
    seed(kv, [f"k{i}" for i in range(5)])

    # WHEN it runs
    reply = invoke({"all": True, "delete_missing": True})

    # THEN it invoked no function: its caller (the state machine, the runner's
    # --follow, an operator) continues with next_cursor, as the message says
    assert lambda_invokes == []
    assert reply["data"]["complete"] is False
    assert "continued" not in reply["data"]
    assert reply["data"]["message"].endswith(
        "stopped before the deadline; pass next_cursor to continue"
    )

    # AND the caller's next invocation with that cursor carries on from there
    following = invoke(
        {"all": True, "delete_missing": True, "cursor": reply["data"]["next_cursor"]}
    )
    assert following["statistics"]["keys_listed"] == 2
    assert sorted(values(aws)) == ["k0", "k1", "k2", "k3"]
