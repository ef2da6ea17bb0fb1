"""The real handler over real sockets: KV emulator for Cloudflare, moto server for AWS.

Single-key syncs (``key_name``): what lands in DynamoDB, how many calls it takes,
the write policy (the stored version is read first; a new or changed value is one
conditional write, an unchanged one no write at all), retries, deadlines and
overlapping invocations.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.aws_calls import recorded_calls
from tests.support.function import load_event
from tests.support.iam import WRITE_OPERATIONS, granted_dynamodb_operations
from tests.support.stack import Stack

DAY = 86_400


def test_syncs_json_text_binary_and_metadata_values(stack: Stack):
    # GIVEN four kinds of value in KV
    ns = stack.namespace_id
    stack.emulator.put(ns, "redirect-all-users-to-essentials", '{"enabled": false}')
    stack.emulator.put(ns, "classic-domain", "classic.example.com")
    stack.emulator.put(ns, "logo", b"\x89PNG\r\n\x1a\n\x00\xff")
    stack.emulator.put(
        ns, "window", "02:00-04:00", metadata={"tz": "UTC", "weight": 0.5}, expiration=1_900_000_000
    )

    # WHEN each is synced
    results = {
        key: stack.invoke({"key_name": key})
        for key in ("redirect-all-users-to-essentials", "classic-domain", "logo", "window")
    }

    # THEN every record matches KV exactly
    assert all(r["success"] for r in results.values()), results
    assert stack.item("redirect-all-users-to-essentials")["value_type"] == "json"  # type: ignore[index]
    assert stack.item("classic-domain")["value"] == "classic.example.com"  # type: ignore[index]
    logo = stack.item("logo")
    assert logo is not None and logo["value_type"] == "binary"
    assert bytes(logo["value"].value) == b"\x89PNG\r\n\x1a\n\x00\xff"
    window = stack.item("window")
    assert window is not None
    assert window["metadata"] == {"tz": "UTC", "weight": 0.5}
    assert window["expiration"] == window["ttl"] == 1_900_000_000
    # AND text values took one Cloudflare call; the binary one needed the raw reads
    assert results["classic-domain"]["statistics"]["cloudflare_api_calls"] == 1
    assert results["logo"]["statistics"]["cloudflare_api_calls"] == 3
    # AND each new record was one write, reported as a change
    for result in results.values():
        assert result["statistics"]["dynamodb_writes"] == 1
        assert result["data"]["record"]["changed"] is True


def test_default_key_is_synced_by_an_empty_event(stack: Stack):
    # GIVEN the default key in KV
    stack.emulator.put(stack.namespace_id, "redirect-all-users-to-essentials", "true")

    # WHEN the function is invoked with {}
    response = stack.invoke({})

    # THEN the default key was synced
    assert response["success"] is True, response
    assert response["data"]["key_name"] == "redirect-all-users-to-essentials"
    assert response["data"]["message"] == "Synced 'redirect-all-users-to-essentials': value stored"


def test_unchanged_key_is_read_but_not_written(stack: Stack):
    # GIVEN a key synced once
    stack.emulator.put(stack.namespace_id, "flag", "on", metadata={"owner": "ops"})
    assert stack.invoke({"key_name": "flag"})["success"] is True
    stored = stack.item("flag")
    stack.emulator.reset_stats()

    # WHEN it is synced again, unchanged in KV
    with recorded_calls("dynamodb") as calls:
        response = stack.invoke({"key_name": "flag"})

    # THEN one bulk get and one BatchGetItem, and no write at all
    assert response["success"] is True, response
    assert response["data"]["message"] == "Synced 'flag': unchanged"
    assert response["data"]["record"]["changed"] is False
    assert response["data"]["record"]["superseded"] is False
    assert response["data"]["processing_summary"]["record_stored"] is True
    assert response["statistics"]["dynamodb_writes"] == 0
    assert response["statistics"]["cloudflare_api_calls"] == 1
    assert [r.path.rsplit("/", 1)[-1] for r in stack.emulator.requests] == ["get"]
    assert calls == ["BatchGetItem"]
    # AND the record, synced_at included, is exactly as before
    assert stack.item("flag") == stored


def test_changed_key_is_one_conditional_write(stack: Stack):
    # GIVEN a key synced once, then changed in KV
    stack.emulator.put(stack.namespace_id, "flag", "on", metadata={"owner": "ops"})
    assert stack.invoke({"key_name": "flag"})["success"] is True
    first = stack.item("flag")
    assert first is not None
    stack.emulator.put(stack.namespace_id, "flag", "off")

    # WHEN it is synced again
    with recorded_calls("dynamodb") as calls:
        response = stack.invoke({"key_name": "flag"})

    # THEN the stored version was read and the record rewritten with one write
    assert response["data"]["message"] == "Synced 'flag': value stored"
    assert response["data"]["record"]["changed"] is True
    assert response["statistics"]["dynamodb_writes"] == 1
    assert len(calls) == 2
    assert calls[0] == "BatchGetItem" and calls[1] in WRITE_OPERATIONS
    # AND the record holds the new value, its metadata gone, created_at kept
    item = stack.item("flag")
    assert item is not None
    assert item["value"] == "off"
    assert "metadata" not in item
    assert item["created_at"] == first["created_at"]
    assert item["updated_at"] == item["synced_at"] > first["synced_at"]


def test_ttl_near_expiry_is_extended_without_rewriting_the_record(stack: Stack):
    # GIVEN a synced key whose ttl is within half of RECORD_TTL_DAYS (30) of expiring
    stack.emulator.put(stack.namespace_id, "flag", "on")
    assert stack.invoke({"key_name": "flag"})["success"] is True
    soon = int(time.time()) + DAY
    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"pk": {"S": f"NAMESPACE#{stack.namespace_id}"}, "sk": {"S": "KEY#flag"}},
        UpdateExpression="SET #t = :t",
        ExpressionAttributeNames={"#t": "ttl"},
        ExpressionAttributeValues={":t": {"N": str(soon)}},
    )
    before = stack.item("flag")
    assert before is not None

    # WHEN it is synced again, unchanged
    with recorded_calls("dynamodb") as calls:
        response = stack.invoke({"key_name": "flag"})

    # THEN it is reported unchanged, with one small write that extended the ttl
    assert response["data"]["record"]["changed"] is False
    assert response["statistics"]["dynamodb_writes"] == 1
    assert calls == ["BatchGetItem", "UpdateItem"]
    item = stack.item("flag")
    assert item is not None
    assert item["ttl"] > time.time() + 29 * DAY
    assert item["synced_at"] > before["synced_at"]
    assert item["updated_at"] == before["updated_at"]
    assert {k: v for k, v in item.items() if k not in {"ttl", "synced_at"}} == {
        k: v for k, v in before.items() if k not in {"ttl", "synced_at"}
    }


def test_syncs_call_only_what_the_execution_role_grants(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    # GIVEN keys to create, change, leave alone and delete, and a deletion guard that
    # lets a run delete every record it selects
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")
    ns = stack.namespace_id
    for key in ("a", "b", "c"):
        stack.emulator.put(ns, key, f"value {key}")

    # WHEN single-key and multi-key syncs of every kind run
    with recorded_calls("dynamodb") as calls:
        stack.invoke({"key_name": "a"})
        stack.invoke({"all": True})
        stack.emulator.put(ns, "a", "changed")
        stack.emulator.delete(ns, "b")
        stack.invoke({"key_names": ["a", "b"], "delete_missing": True})
        stack.emulator.delete(ns, "c")
        stack.invoke({"key_name": "c", "delete_missing": True})

    # THEN they read, wrote and deleted, calling only what the execution role may call
    assert {"BatchGetItem", "Query", "DeleteItem"} <= set(calls)
    assert set(calls) & set(WRITE_OPERATIONS)
    assert set(calls) <= granted_dynamodb_operations()
    assert set(stack.items()) == {"a"}


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (True, "Key 'gone' does not exist in the KV namespace; its DynamoDB record was deleted"),
        (False, "Key 'gone' does not exist in the KV namespace; no record to delete"),
    ],
    ids=["record-stored", "no-record"],
)
def test_missing_key_with_delete_missing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, stored: bool, message: str
):
    # GIVEN a key gone from KV, whose record is stored or not, and a deletion guard that
    # lets a run delete every record it selects (here: the one record of the key)
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")
    if stored:
        stack.emulator.put(stack.namespace_id, "gone", "soon gone")
        assert stack.invoke({"key_name": "gone"})["success"] is True
        stack.emulator.delete(stack.namespace_id, "gone")

    # WHEN it is synced with delete_missing
    with recorded_calls("dynamodb") as calls:
        response = stack.invoke({"key_name": "gone", "delete_missing": True})

    # THEN NOT_FOUND says whether a record was deleted, and none is left
    assert response["success"] is False
    assert response["error"]["type"] == "NOT_FOUND"
    assert response["error"]["message"] == message
    assert response["statistics"]["dynamodb_writes"] == int(stored)
    assert calls == (["BatchGetItem", "DeleteItem"] if stored else ["BatchGetItem"])
    assert stack.item("gone") is None


def test_missing_key_without_delete_missing_leaves_its_record(stack: Stack):
    # GIVEN a synced key, then deleted from KV
    stack.emulator.put(stack.namespace_id, "gone", "soon gone")
    assert stack.invoke({"key_name": "gone"})["success"] is True
    stored = stack.item("gone")
    stack.emulator.delete(stack.namespace_id, "gone")

    # WHEN it is synced without delete_missing
    response = stack.invoke({"key_name": "gone"})

    # THEN NOT_FOUND, and the record is left alone
    assert response["error"]["type"] == "NOT_FOUND"
    assert response["error"]["message"] == "Key 'gone' does not exist in the KV namespace"
    assert response["statistics"]["dynamodb_writes"] == 0
    assert stack.item("gone") == stored


def test_awkward_key_names_reach_only_their_own_path(stack: Stack):
    for key in ("../../tokens/verify", "a/b?c#d"):
        # GIVEN a binary value, which bulk get cannot return, under an awkward name
        stack.emulator.put(stack.namespace_id, key, b"\xfe binary to force the per-key URL")
        stack.emulator.reset_stats()

        # WHEN it is synced
        response = stack.invoke({"key_name": key})

        # THEN its value was read from its own, single-segment path
        assert response["success"] is True, response
        paths = [r.path for r in stack.emulator.requests]
        assert all("/tokens/verify" not in p.replace("%2F", "?") for p in paths)
        assert any(p.endswith("/values/" + quote(key, safe="")) for p in paths), paths


def test_warm_container_reuses_one_connection_for_50_invocations(stack: Stack):
    # GIVEN a key and a container that has not talked to Cloudflare yet
    from kv_sync import cloudflare

    stack.emulator.put(stack.namespace_id, "flag", "on")
    cloudflare.SESSION.close()
    stack.emulator.reset_stats()

    # WHEN 50 invocations run one after another
    results = [stack.invoke({"key_name": "flag"}) for _ in range(50)]

    # THEN all succeeded over a single TCP connection, and only the first wrote
    assert all(r["success"] for r in results)
    assert len(stack.emulator.requests) == 50
    assert stack.emulator.connections_opened == 1
    assert [r["statistics"]["dynamodb_writes"] for r in results] == [1] + [0] * 49


def test_rotated_token_is_picked_up_after_one_401(stack: Stack):
    # GIVEN a warm container with the old token cached
    stack.emulator.put(stack.namespace_id, "flag", "on")
    assert stack.invoke({"key_name": "flag"})["success"] is True

    # WHEN the token is rotated in Cloudflare and in the secret
    stack.emulator.set_tokens(["rotated-token"])
    stack.put_secret("rotated-token")
    stack.emulator.reset_stats()
    response = stack.invoke({"key_name": "flag"})

    # THEN one 401, one secret re-read, one successful retry
    assert response["success"] is True, response
    assert [r.status for r in stack.emulator.requests] == [401, 200]
    assert response["statistics"]["cloudflare_api_calls"] == 2


def test_stale_invocation_cannot_overwrite_newer_record(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    # GIVEN invocation A reads v1 and is held up before its write
    from kv_sync import store

    ns = stack.namespace_id
    stack.emulator.put(ns, "flag", "v1")
    a_fetched, b_done = threading.Event(), threading.Event()
    real_write = store.write

    def held_write(table: str, record: Any, *args: Any, **kwargs: Any) -> bool:
        if record.attributes["value"] == "v1":
            a_fetched.set()
            assert b_done.wait(10)
        return real_write(table, record, *args, **kwargs)

    monkeypatch.setattr(store, "write", held_write)
    results: dict[str, Any] = {}
    a = threading.Thread(target=lambda: results.setdefault("a", stack.invoke({"key_name": "flag"})))
    a.start()
    assert a_fetched.wait(10)

    # WHEN KV changes to v2 and invocation B syncs it while A waits
    stack.emulator.put(ns, "flag", "v2")
    results["b"] = stack.invoke({"key_name": "flag"})
    b_done.set()
    a.join(10)

    # THEN A reports superseded, and the table holds B's newer value
    assert results["b"]["data"]["record"]["changed"] is True
    assert results["a"]["success"] is True
    assert results["a"]["data"]["record"]["superseded"] is True
    assert results["a"]["data"]["processing_summary"]["record_stored"] is False
    item = stack.item("flag")
    assert item is not None and item["value"] == "v2"


def test_retry_after_is_honoured(stack: Stack):
    # GIVEN Cloudflare answers 429 with Retry-After: 1 once
    stack.emulator.put(stack.namespace_id, "flag", "on")
    stack.emulator.add_fault(status=429, retry_after="1", times=1, path_contains="/bulk/get")

    # WHEN the key is synced
    started = time.monotonic()
    response = stack.invoke({"key_name": "flag"})
    elapsed = time.monotonic() - started

    # THEN the retry waited the full second Cloudflare asked for, then succeeded
    assert response["success"] is True, response
    assert response["statistics"]["cloudflare_retries"] == 1
    assert elapsed >= 1.0
    statuses = [r.status for r in stack.emulator.requests if "/bulk/get" in r.path]
    assert statuses[-2:] == [429, 200]


def test_deadline_stops_retries_early(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    # GIVEN Cloudflare keeps answering 503 "retry after 1 s" and 2.8 s are left
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "10")
    stack.emulator.put(stack.namespace_id, "flag", "on")
    stack.emulator.add_fault(status=503, retry_after="1", times=-1, path_contains="/bulk/get")

    # WHEN the key is synced
    started = time.monotonic()
    response = stack.invoke({"key_name": "flag"}, timeout_ms=2_800)
    elapsed = time.monotonic() - started

    # THEN after one retry there was no time for another (2.8 s less the 0.5 s
    # safety margin leaves too little after a second 1 s wait), so it stopped
    # early, well before 10 attempts and before the deadline, and said why
    assert response["success"] is False
    assert response["error"]["type"] == "API_ERROR"
    assert response["error"]["is_retryable"] is True
    assert response["statistics"]["cloudflare_api_calls"] == 2
    assert elapsed < 2.8
    assert stack.item("flag") is None


def test_read_timeout_inside_deadline_is_timeout(stack: Stack, monkeypatch: pytest.MonkeyPatch):
    # GIVEN Cloudflare hangs longer than the read timeout, on every attempt
    monkeypatch.setenv("API_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    stack.emulator.put(stack.namespace_id, "flag", "on")
    stack.emulator.add_fault(delay=2.0, times=-1, path_contains="/bulk/get")

    # WHEN the key is synced
    response = stack.invoke({"key_name": "flag"})

    # THEN both attempts timed out: TIMEOUT
    assert response["error"]["type"] == "TIMEOUT"
    assert response["error"]["is_retryable"] is True
    assert response["statistics"]["cloudflare_api_calls"] == 2


def test_dropped_connections_are_retried(stack: Stack):
    # GIVEN a dropped connection, then a truncated body
    stack.emulator.put(stack.namespace_id, "flag", "on")
    stack.emulator.add_fault(drop_connection=True, times=1, path_contains="/bulk/get")
    stack.emulator.add_fault(truncate_body=True, times=1, path_contains="/bulk/get")

    # WHEN the key is synced
    response = stack.invoke({"key_name": "flag"})

    # THEN both were retried and the third attempt succeeded
    assert response["success"] is True, response
    assert response["statistics"]["cloudflare_retries"] == 2


@pytest.mark.parametrize("secret", ["", "   "], ids=["empty", "blank"])
def test_scheduled_run_with_an_unusable_secret_raises(stack: Stack, secret: str):
    # GIVEN the secret holds no credentials
    if secret:
        stack.put_raw_secret(secret)
    else:  # a secret created without a value, as Terraform leaves it
        stack.secrets.delete_secret(SecretId=stack.secret, ForceDeleteWithoutRecovery=True)
        stack.secrets.create_secret(Name=stack.secret)
    stack.emulator.put(stack.namespace_id, "flag", "on")
    event = load_event("scheduledEvent.json")
    event["detail"] = {"key_name": "flag"}

    # WHEN the schedule runs the function
    from kv_sync.errors import SyncError

    with pytest.raises(SyncError) as raised:
        stack.invoke(event)

    # THEN the handler raised the configuration error, though retrying will not help,
    # so that Lambda's Errors metric and failure queue see the run fail
    assert raised.value.type == "CONFIGURATION_ERROR"
    assert raised.value.is_retryable is False
    assert stack.item("flag") is None
    assert stack.emulator.requests == []


def test_scheduled_run_with_failed_keys_returns_its_document(stack: Stack):
    # GIVEN five ordinary keys and one value too large for an item, even compressed
    for i in range(5):
        stack.emulator.put(stack.namespace_id, f"k{i}", f"value {i}")
    stack.emulator.put(stack.namespace_id, "huge", os.urandom(600_000))
    event = load_event("scheduledEvent.json")
    event["detail"] = {"all": True}

    # WHEN the schedule syncs the namespace
    document = stack.invoke(event)

    # THEN the completed run returns, listing the key that failed, and stored the rest
    assert document["success"] is False
    assert document["statistics"]["complete"] is True
    assert [failed["key"] for failed in document["data"]["failed_keys"]] == ["huge"]
    assert document["data"]["failed_keys"][0]["type"] == "VALUE_TOO_LARGE"
    assert set(stack.values()) == {f"k{i}" for i in range(5)}
