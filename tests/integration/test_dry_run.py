"""Dry runs end to end: every selector, through every trigger, reads all and writes nothing.

A dry run (``"dry_run": true``, or ``?dry_run=true`` on a Function URL GET) must leave
the table exactly as it was (no record written or deleted, no lease taken), and report
what the real run would do: the same statistics the following real run produces, and a
sample of key names per action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.function import load_event
from tests.support.function_url import FunctionUrl, function_url
from tests.support.kv_data import seed
from tests.support.stack import Stack
from tests.support.table import held, snapshot

# Selectors over a namespace where, since it was synced, flags/004 changed, flags/new
# appeared, flags/010 and config/001 left KV; with delete_missing, each stays within
# the deletion guard's 25 %.
SELECTORS: dict[str, dict[str, Any]] = {
    "key_name": {"key_name": "flags/004"},
    "key_names": {
        "key_names": ["flags/004", "flags/new", "flags/005", "flags/006", "flags/010"],
        "delete_missing": True,
    },
    "prefix": {"prefix": "flags/", "delete_missing": True},
    "all": {"all": True, "delete_missing": True},
}
# Statistics a dry run cannot share with the real run: time, and the writes it skips.
NOT_COMPARED = {"execution_time_ms", "dynamodb_writes", "state_writes"}

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ten keys a listing page (the API's minimum), so that the namespace spans pages.
    monkeypatch.setattr("kv_sync.pages.LIST_PAGE_SIZE", 10)


@pytest.fixture
def url() -> Iterator[FunctionUrl]:
    with function_url() as served:
        yield served


def changed_since_synced(stack: Stack) -> None:
    """12 flags/ and 3 config/ keys synced; then one changed, one new, two gone from KV."""
    seed(stack, 12, prefix="flags/")
    seed(stack, 3, prefix="config/")
    assert stack.invoke({"all": True})["statistics"]["records_written"] == 15
    ns = stack.namespace_id
    stack.emulator.put(ns, "flags/004", b"changed four")
    stack.emulator.put(ns, "flags/new", b"a new key")
    stack.emulator.delete(ns, "flags/010")
    stack.emulator.delete(ns, "config/001")


def through(trigger: str, stack: Stack, url: FunctionUrl) -> Invoke:
    """Invoke the function with an event's fields through ``trigger``; its document."""

    def direct(fields: dict[str, Any]) -> dict[str, Any]:
        document: dict[str, Any] = stack.invoke(fields)
        return document

    def post(fields: dict[str, Any]) -> dict[str, Any]:
        reply = url.post(fields)
        assert reply.status in (200, 207), reply.document
        return reply.document

    def get(fields: dict[str, Any]) -> dict[str, Any]:
        query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in fields.items()}
        reply = url.get(query)
        assert reply.status in (200, 207), reply.document
        return reply.document

    def schedule(fields: dict[str, Any]) -> dict[str, Any]:
        event = load_event("scheduledEvent.json")
        event["detail"] = fields
        document: dict[str, Any] = stack.invoke(event)
        return document

    return {"direct": direct, "post": post, "get": get, "schedule": schedule}[trigger]


CASES = [
    (selector, trigger)
    for selector in SELECTORS
    for trigger in ("direct", "post", "get", "schedule")
    if (selector, trigger) != ("key_names", "get")  # a query carries no list
]


@pytest.mark.parametrize(("selector", "trigger"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_dry_run_writes_nothing_and_foretells_the_real_run(
    stack: Stack, url: FunctionUrl, selector: str, trigger: str
):
    # GIVEN a namespace changed since it was synced
    changed_since_synced(stack)
    before = snapshot(stack)
    invoke = through(trigger, stack, url)

    # WHEN the selector is dry-run
    dry = invoke({**SELECTORS[selector], "dry_run": True})

    # THEN the table is exactly as it was: nothing written or deleted, no lease taken
    assert snapshot(stack) == before
    assert dry["statistics"]["dynamodb_writes"] == 0
    # AND the document says it was a dry run, with a sample of key names per action
    data = dry["data"]
    assert data["dry_run"] is True
    if selector == "key_name":
        assert data["message"] == "Dry run: 'flags/004' would be stored; nothing was written"
        assert data["processing_summary"]["record_stored"] is False
    else:
        assert data["message"].startswith("Dry run, nothing written: would sync ")
        assert dry["statistics"]["state_writes"] == 0

    # WHEN the same selector then runs for real
    real = invoke(SELECTORS[selector])

    # THEN it did what the dry run said, with the same statistics
    after = stack.items()
    stored = {sk[4:]: item for (_, sk), item in before.items() if sk.startswith("KEY#")}
    written = sorted(key for key in after if after[key]["synced_at"] != _synced_at(stored, key))
    deleted = sorted(set(stored) - set(after))
    assert real["success"] is True, real
    assert {k: v for k, v in dry["statistics"].items() if k not in NOT_COMPARED} == {
        k: v for k, v in real["statistics"].items() if k not in NOT_COMPARED
    }
    assert sorted(data["sample"].get("written", [])) == written
    assert sorted(data["sample"].get("deleted", [])) == deleted
    assert written and (deleted or not SELECTORS[selector].get("delete_missing"))


def _synced_at(stored: dict[str, dict[str, Any]], key: str) -> str | None:
    item = stored.get(key)
    return None if item is None else str(item["synced_at"]["S"])


def test_dry_run_reports_a_refusal_instead_of_failing(stack: Stack):
    # GIVEN 12 synced keys, 9 of which then left KV (75 %)
    values = seed(stack, 12)
    stack.invoke({"all": True})
    for key in list(values)[:9]:
        stack.emulator.delete(stack.namespace_id, key)
    before = snapshot(stack)

    # WHEN the namespace is dry-run with delete_missing
    dry = stack.invoke({"all": True, "delete_missing": True, "dry_run": True})

    # THEN the dry run succeeds, reporting that the guard would refuse, deleting nothing
    assert dry["success"] is True, dry
    deletion = dry["data"]["deletion"]
    assert deletion["to_delete"] == 9 and deletion["stored"] == 12
    assert "more than MAX_DELETE_PERCENT (25 %)" in deletion["refused"]
    assert dry["statistics"]["records_deleted"] == 0
    assert snapshot(stack) == before
    # AND the real run is indeed refused
    real = stack.invoke({"all": True, "delete_missing": True})
    assert real["error"]["type"] == "DELETION_REFUSED"
    assert real["deletion"]["refused"] == deletion["refused"]


def follow(stack: Stack, event: dict[str, Any]) -> list[dict[str, Any]]:
    """Invoke, then pass each ``next_cursor`` back until the run ends; every reply."""
    replies = [stack.invoke(event)]
    while replies[-1]["data"]["next_cursor"] and len(replies) < 10:
        replies.append(stack.invoke({**event, "cursor": replies[-1]["data"]["next_cursor"]}))
    return replies


def test_dry_run_over_several_invocations_stays_dry(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    # GIVEN 25 keys in KV, none synced, and invocations with the time for one page only
    seed(stack, 25)
    monkeypatch.setattr("kv_sync.engine.MIN_PAGE_SECONDS", 3_600.0)
    before = snapshot(stack)

    # WHEN a dry run of the namespace is followed to its end
    replies = follow(stack, {"all": True, "dry_run": True})

    # THEN every invocation was a dry run, and the table never changed
    assert [r["statistics"]["complete"] for r in replies] == [False, False, True]
    assert sum(r["statistics"]["records_written"] for r in replies) == 25
    assert all(r["data"]["dry_run"] is True for r in replies)
    assert snapshot(stack) == before

    # AND a dry run's cursor cannot continue a real run
    real = stack.invoke({"all": True, "cursor": replies[0]["data"]["next_cursor"]})
    assert real["error"]["type"] == "VALIDATION_ERROR"
    assert "dry_run" in real["error"]["message"]
    assert snapshot(stack) == before


def test_dry_run_over_several_invocations_foretells_the_whole_runs_deletions(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    # GIVEN 40 synced keys, one per listing page of which then left KV, and
    # invocations with the time for one page only
    seed(stack, 40)
    monkeypatch.setattr("kv_sync.engine.MIN_PAGE_SECONDS", 3_600.0)
    follow(stack, {"all": True})
    for key in ("flags/002", "flags/015", "flags/027", "flags/036"):
        stack.emulator.delete(stack.namespace_id, key)
    before = snapshot(stack)

    # WHEN the namespace is dry-run with delete_missing, then run for real
    dry = follow(stack, {"all": True, "delete_missing": True, "dry_run": True})
    assert snapshot(stack) == before
    real = follow(stack, {"all": True, "delete_missing": True})

    # THEN each dry-run invocation said what the real one did: the last one deletes
    # what the whole run found gone
    assert [r["statistics"]["records_deleted"] for r in real] == [0, 0, 0, 4]
    for field in ("records_deleted", "records_unchanged", "records_processed"):
        assert [r["statistics"][field] for r in dry] == [r["statistics"][field] for r in real]
    assert dry[-1]["data"]["deletion"]["to_delete"] == 4


def test_dry_run_checks_the_lease_without_taking_it(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    # GIVEN 25 keys, one page per invocation, and a dry run that paused after a page
    seed(stack, 25)
    monkeypatch.setattr("kv_sync.engine.MIN_PAGE_SECONDS", 3_600.0)
    dry = stack.invoke({"all": True, "dry_run": True})
    assert dry["data"]["next_cursor"]

    # THEN it holds no lease: a real run starts meanwhile
    assert held(stack) == []
    real = stack.invoke({"all": True}, timeout_ms=600_000)
    assert real["success"] is True and real["data"]["next_cursor"], real
    assert stack.lease() is not None

    # WHEN the dry run is continued while the real run holds the lease
    continued = stack.invoke({"all": True, "dry_run": True, "cursor": dry["data"]["next_cursor"]})

    # THEN it is told of the conflict, as a real run would be
    assert continued["error"]["type"] == "CONFLICT"
