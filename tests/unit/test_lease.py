"""One multi-key run per namespace at a time: the lease, through the handler.

A ``key_names``, ``prefix`` or ``all`` run holds the namespace's lease from its
first invocation to its last; another multi-key run meanwhile fails fast with
``CONFLICT`` (409, retryable, ``Retry-After``). ``key_name`` syncs ignore it, an
expired lease is taken over, and the lease is released when the run ends.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.cloudflare import NAMESPACE_ID
from tests.support.function import load_event
from tests.support.sync_runs import (
    follow,
    hold_lease,
    invoke,
    kv_values,
    lease,
    seed,
    values,
)

OTHER_RUN = "0123456789abcdef0123456789abcdef"
OTHER_STARTED = "2026-01-02T03:04:05.000006Z"
MULTI_KEY: dict[str, dict[str, Any]] = {
    "key_names": {"key_names": ["a", "b"]},
    "prefix": {"prefix": "a"},
    "all": {"all": True},
}


@pytest.fixture
def another_run(aws: Any) -> float:
    """Another multi-key run holding the lease for ten more minutes; its expiry."""
    expires_at = time.time() + 600
    hold_lease(aws, run_id=OTHER_RUN, started_at=OTHER_STARTED, expires_at=expires_at)
    return expires_at


def holder(aws: Any) -> str | None:
    item = lease(aws)
    return None if item is None else str(item["run_id"]["S"])


# --------------------------------------------------------------------- conflict


@pytest.mark.parametrize("selector", list(MULTI_KEY))
def test_a_multi_key_run_fails_fast_while_another_holds_the_lease(
    aws, kv, cf, another_run, selector
):
    # GIVEN another run syncing the namespace, and keys to sync
    seed(kv, ["a", "b"])

    # WHEN a multi-key run starts
    reply = invoke(MULTI_KEY[selector])

    # THEN it fails with CONFLICT, saying since when the other run has been syncing
    assert reply["success"] is False
    error = reply["error"]
    assert error["type"] == "CONFLICT"
    assert error["is_retryable"] is True
    assert error["message"].startswith(
        f"Another multi-key run has been syncing namespace {NAMESPACE_ID} since {OTHER_STARTED}"
    )
    # AND it neither read Cloudflare nor wrote anything; the other run keeps its lease
    assert len(cf.calls) == 0
    assert values(aws) == {}
    assert holder(aws) == OTHER_RUN


def test_conflict_through_the_function_url_is_409_with_retry_after(aws, kv, another_run):
    # GIVEN another run whose lease has ten minutes left, and a POST syncing the namespace
    seed(kv, ["a"])
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps({"all": True})

    # WHEN it is handled
    response = invoke(event)

    # THEN the answer is 409 CONFLICT, telling the caller to come back once the lease
    # may have expired
    assert response["statusCode"] == 409
    assert 1 <= int(response["headers"]["Retry-After"]) <= 600
    document = json.loads(response["body"])
    assert document["error"]["type"] == "CONFLICT"
    assert OTHER_STARTED in document["error"]["message"]


def test_a_key_name_sync_ignores_the_lease(aws, kv, another_run):
    # GIVEN another multi-key run holding the lease
    seed(kv, ["a"])

    # WHEN one key is synced by name
    reply = invoke({"key_name": "a"})

    # THEN it is synced, and the other run's lease is left as it was
    assert reply["success"] is True
    assert sorted(values(aws)) == ["a"]
    assert holder(aws) == OTHER_RUN


def test_an_expired_lease_is_taken_over(aws, kv):
    # GIVEN a lease left by a run whose invocation died a minute ago
    hold_lease(aws, run_id=OTHER_RUN, started_at=OTHER_STARTED, expires_at=time.time() - 60)
    seed(kv, ["a", "b"])

    # WHEN a multi-key run starts
    reply = invoke({"all": True})

    # THEN it runs, and releases the lease at its end
    assert reply["success"] is True
    assert sorted(values(aws)) == ["a", "b"]
    assert lease(aws) is None


# ---------------------------------------------------------------- across a run


def test_a_run_holds_the_lease_from_its_first_invocation_to_its_last(
    aws, kv, small_pages, one_page_per_invocation
):
    # GIVEN a namespace whose sync takes three invocations
    seed(kv, [f"k{i}" for i in range(5)])

    # WHEN the first invocation stops with a cursor
    first = invoke({"all": True})
    held = lease(aws)

    # THEN the run still holds the lease, so another multi-key run is turned away,
    # told since when the first one has been syncing
    assert first["data"]["complete"] is False
    assert held is not None
    started_at = held["started_at"]["S"]
    other = invoke({"prefix": "k"})
    assert other["error"]["type"] == "CONFLICT"
    assert f"since {started_at}" in other["error"]["message"]

    # WHEN the first run is continued with its cursor to its end
    replies = follow({"all": True}, first)

    # THEN its next invocations took the same lease again, and the last released it
    assert [r["success"] for r in replies] == [True] * 3
    assert values(aws) == kv_values(kv)
    assert lease(aws) is None
    # AND the other run may start now
    assert invoke({"prefix": "k"})["success"] is True


def test_the_lease_is_released_when_a_run_fails(aws, kv, small_pages, monkeypatch):
    # GIVEN Cloudflare failing the listing after its first page
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    seed(kv, [f"k{i}" for i in range(5)])
    kv.fail_after("list", 1)

    # WHEN a multi-key run meets the failure
    failed = invoke({"all": True})

    # THEN the lease is released: another run need not wait for it to expire
    assert failed["error"]["type"] == "API_ERROR"
    assert lease(aws) is None
    kv.recover()
    assert invoke({"prefix": "k"})["success"] is True
    # AND the failed run can still be resumed from its cursor
    rest = invoke({"all": True, "cursor": failed["statistics"]["next_cursor"]})
    assert rest["data"]["complete"] is True
    assert lease(aws) is None


def test_a_run_that_completes_leaves_no_lease(aws, kv):
    # GIVEN keys to sync
    seed(kv, ["a", "b"])

    # WHEN a multi-key run completes in one invocation
    reply = invoke({"key_names": ["a", "b"]})

    # THEN the lease it took is gone, and its bookkeeping writes are counted apart
    # from the record writes
    assert reply["success"] is True
    assert lease(aws) is None
    assert reply["statistics"]["dynamodb_writes"] == 2
    assert reply["statistics"]["state_writes"] >= 2  # the lease taken and released
