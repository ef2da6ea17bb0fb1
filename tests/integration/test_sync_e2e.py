"""The real handler over real sockets: KV emulator for Cloudflare, moto server for AWS."""

from __future__ import annotations

import threading
import time

import store
from tests.integration.conftest import Stack


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
    # text values took one Cloudflare call; the binary one needed the raw reads
    assert results["classic-domain"]["statistics"]["cloudflare_api_calls"] == 1
    assert results["logo"]["statistics"]["cloudflare_api_calls"] == 3


def test_awkward_key_names_reach_only_their_own_path(stack: Stack):
    for key in ("../../tokens/verify", "a/b?c#d"):
        stack.emulator.put(stack.namespace_id, key, b"\xfe binary to force the per-key URL")
        stack.emulator.reset_stats()

        response = stack.invoke({"key_name": key})

        assert response["success"] is True, response
        paths = [r.path for r in stack.emulator.requests]
        assert all("/tokens/verify" not in p.replace("%2F", "?") for p in paths)
        assert any(p.endswith("/values/" + _enc(key)) for p in paths), paths


def _enc(key: str) -> str:
    from urllib.parse import quote

    return quote(key, safe="")


def test_warm_container_reuses_one_connection_for_50_invocations(stack: Stack):
    # GIVEN a key and a container that has not talked to Cloudflare yet
    stack.emulator.put(stack.namespace_id, "flag", "on")
    import cloudflare

    cloudflare.SESSION.close()
    stack.emulator.reset_stats()

    # WHEN 50 invocations run one after another
    results = [stack.invoke({"key_name": "flag"}) for _ in range(50)]

    # THEN all succeeded over a single TCP connection
    assert all(r["success"] for r in results)
    assert len(stack.emulator.requests) == 50
    assert stack.emulator.connections_opened == 1


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


def test_stale_invocation_cannot_overwrite_newer_record(stack: Stack, monkeypatch):
    # GIVEN invocation A reads v1 and is held up before its write
    ns = stack.namespace_id
    stack.emulator.put(ns, "flag", "v1")
    a_fetched, b_done = threading.Event(), threading.Event()
    real_write = store.write_record

    def held_write(table, record):
        if record.attributes["value"] == "v1":
            a_fetched.set()
            assert b_done.wait(10)
        return real_write(table, record)

    monkeypatch.setattr("store.write_record", held_write)
    results: dict[str, object] = {}
    a = threading.Thread(target=lambda: results.setdefault("a", stack.invoke({"key_name": "flag"})))
    a.start()
    assert a_fetched.wait(10)

    # WHEN KV changes to v2 and invocation B syncs it while A waits
    stack.emulator.put(ns, "flag", "v2")
    results["b"] = stack.invoke({"key_name": "flag"})
    b_done.set()
    a.join(10)

    # THEN A reports superseded, and the table holds B's newer value
    assert results["b"]["data"]["record"]["changed"] is True  # type: ignore[index]
    assert results["a"]["success"] is True  # type: ignore[index]
    assert results["a"]["data"]["record"]["superseded"] is True  # type: ignore[index]
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

    # THEN the retry waited the full second, then succeeded
    assert response["success"] is True, response
    assert response["statistics"]["cloudflare_retries"] == 1
    assert elapsed >= 1.0
    statuses = [r.status for r in stack.emulator.requests if "/bulk/get" in r.path]
    assert statuses[-2:] == [429, 200]


def test_deadline_stops_retries_early(stack: Stack, monkeypatch):
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
    # early, well before 10 attempts and the deadline, and said why
    assert response["success"] is False
    assert response["error"]["type"] == "API_ERROR"
    assert response["error"]["is_retryable"] is True
    assert response["statistics"]["cloudflare_api_calls"] == 2
    assert 1.0 <= elapsed < 2.3
    assert stack.item("flag") is None


def test_read_timeout_inside_deadline_is_timeout(stack: Stack, monkeypatch):
    # GIVEN Cloudflare hangs longer than the read timeout
    monkeypatch.setenv("API_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    stack.emulator.put(stack.namespace_id, "flag", "on")
    stack.emulator.add_fault(delay=2.0, times=-1, path_contains="/bulk/get")

    response = stack.invoke({"key_name": "flag"})

    assert response["error"]["type"] == "TIMEOUT"
    assert response["statistics"]["cloudflare_api_calls"] == 2


def test_dropped_connections_are_retried(stack: Stack):
    stack.emulator.put(stack.namespace_id, "flag", "on")
    stack.emulator.add_fault(drop_connection=True, times=1, path_contains="/bulk/get")
    stack.emulator.add_fault(truncate_body=True, times=1, path_contains="/bulk/get")

    response = stack.invoke({"key_name": "flag"})

    assert response["success"] is True, response
    assert response["statistics"]["cloudflare_retries"] == 2
