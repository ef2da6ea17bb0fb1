"""Where Cloudflare's replies are not what they seem (``kv_sync.cloudflare``), with ``responses``.

Bulk get may decode a value that is not UTF-8 with U+FFFD replacements, and answers
413 when a batch's values pass 25 MB; a listing page may be empty and still have a
cursor; every reply may report the token's remaining budget (``Ratelimit``).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from boto3.dynamodb.types import Binary

from kv_sync import errors
from kv_sync.model import KVEntry
from kv_sync.ratelimit import RateLimiter
from tests.support.cloudflare import (
    BULK_GET_URL,
    KEYS_URL,
    NAMESPACE_URL,
    bulk_entry,
    bulk_get_reply,
    bulk_values_reply,
    envelope,
    failure,
    list_keys_reply,
    stored_item,
)
from tests.support.kv_client import Client, text_entry
from tests.support.sync_runs import invoke, store_records, values

LOSSY = "ab\ufffdcd"  # b"ab\xffcd" as bulk get decodes it
RAW = b"ab\xffcd"


def value_reads(cf: Any) -> list[str]:
    """The keys read one by one through the raw values endpoint."""
    urls = [call.request.url or "" for call in cf.calls]
    return [url.rsplit("/", 1)[1] for url in urls if "/values/" in url]


def bulk_batches(cf: Any) -> list[list[str]]:
    """The keys of each bulk get, in order."""
    return [
        json.loads(call.request.body)["keys"]
        for call in cf.calls
        if call.request.url == BULK_GET_URL
    ]


# ------------------------------------------------------------ lossy text values


def test_text_with_a_replacement_character_is_reread_as_its_exact_bytes(cf):
    # GIVEN bulk get returning a value that is not UTF-8 decoded with U+FFFD, next
    # to an ordinary one
    cf.post(
        BULK_GET_URL,
        json=bulk_values_reply(
            {"blob": bulk_entry(LOSSY, {"kind": "bin"}), "flag": bulk_entry("on")}
        ),
    )
    cf.get(f"{NAMESPACE_URL}/values/blob", body=RAW, headers={"expiration": "1900000000"})
    cf.get(f"{NAMESPACE_URL}/metadata/blob", json=envelope({"kind": "bin"}))
    client = Client()

    # WHEN both are fetched
    entries = client.kv.get_entries(["blob", "flag"])

    # THEN the lossy one is read again through the values endpoint, bytes intact
    assert entries["blob"] == KVEntry("blob", RAW, {"kind": "bin"}, 1_900_000_000)
    assert entries["flag"] == KVEntry("flag", b"on", None, None)
    assert value_reads(cf) == ["blob"]
    assert client.stats.api_calls == 3


def test_a_value_really_holding_a_replacement_character_is_kept(cf):
    # GIVEN a text value that genuinely contains U+FFFD
    text = "broken \ufffd glyph"
    cf.post(BULK_GET_URL, json=bulk_get_reply("note", text))
    cf.get(f"{NAMESPACE_URL}/values/note", body=text.encode("utf-8"))
    cf.get(f"{NAMESPACE_URL}/metadata/note", json=envelope(None))

    # WHEN it is fetched
    entry = text_entry(Client(), "note")

    # THEN the raw read confirms it, and the value is that text
    assert entry.value == text.encode("utf-8")


def test_a_lossy_value_is_stored_as_its_exact_bytes(aws, cf):
    # GIVEN a key whose binary value bulk get decodes lossily
    cf.post(BULK_GET_URL, json=bulk_get_reply("blob", LOSSY))
    cf.get(f"{NAMESPACE_URL}/values/blob", body=RAW)
    cf.get(f"{NAMESPACE_URL}/metadata/blob", json=envelope(None))

    # WHEN it is synced
    reply = invoke({"key_name": "blob"})

    # THEN DynamoDB holds the exact bytes as Binary, not the replacement characters
    assert reply["success"] is True
    item = stored_item(aws, "blob")
    assert item is not None
    assert item["value"] == Binary(RAW)
    assert item["value_type"] == "binary"


# -------------------------------------------------------------------- 413 splits


def test_a_batch_too_large_for_bulk_get_is_halved_until_it_fits(cf):
    # GIVEN bulk get answering 413 for any batch of more than two keys
    def bulk_get(request: Any) -> tuple[int, dict[str, str], str]:
        keys = json.loads(request.body)["keys"]
        if len(keys) > 2:
            return 413, {}, json.dumps(failure(10011, "response too large"))
        return 200, {}, json.dumps(bulk_values_reply({k: bulk_entry(f"v-{k}") for k in keys}))

    cf.add_callback("POST", BULK_GET_URL, callback=bulk_get)
    keys = [f"k{i}" for i in range(5)]

    # WHEN five keys are fetched
    entries = Client().kv.get_entries(keys)

    # THEN the batch was halved (and the bigger half again), and every key arrived
    assert bulk_batches(cf) == [keys, keys[:2], keys[2:], keys[2:3], keys[3:]]
    assert entries == {key: KVEntry(key, f"v-{key}".encode(), None, None) for key in keys}
    assert value_reads(cf) == []


def test_a_single_value_too_large_for_bulk_get_is_read_alone(cf):
    # GIVEN bulk get answering 413 even for the key alone
    cf.post(BULK_GET_URL, status=413, json=failure(10011, "response too large"))
    cf.get(f"{NAMESPACE_URL}/values/big", body=b"x" * 1000)
    cf.get(f"{NAMESPACE_URL}/metadata/big", json=envelope({"size": "big"}))

    # WHEN it is fetched
    entry = text_entry(Client(), "big")

    # THEN it is read through the values endpoint instead
    assert entry == KVEntry("big", b"x" * 1000, {"size": "big"}, None)
    assert value_reads(cf) == ["big"]


# ---------------------------------------------------------------- empty pages


def list_pages(cf: Any, *pages: tuple[list[str], str]) -> None:
    """Serve these listing pages in turn: (names, cursor), "" for the last."""
    for names, cursor in pages:
        cf.get(re.compile(re.escape(KEYS_URL) + r"(\?.*)?$"), json=list_keys_reply(names, cursor))


def test_empty_listing_pages_with_a_cursor_are_followed(aws, cf):
    # GIVEN a listing that starts with two empty pages, each with a cursor
    list_pages(cf, ([], "c1"), ([], "c2"), (["a", "b"], ""))
    cf.post(BULK_GET_URL, json=bulk_values_reply({"a": bulk_entry("1"), "b": bulk_entry("2")}))

    # WHEN the namespace is synced
    reply = invoke({"all": True})

    # THEN the run followed the cursors to the keys, and completed
    assert reply["data"]["complete"] is True
    assert reply["statistics"]["keys_listed"] == 2
    assert values(aws) == {"a": "1", "b": "2"}
    cursors = [call.request.url for call in cf.calls if "/keys" in (call.request.url or "")]
    assert [url.rsplit("cursor=", 1)[-1] if "cursor=" in url else None for url in cursors] == [
        None,
        "c1",
        "c2",
    ]


def test_an_empty_page_between_pages_hides_no_key_from_delete_missing(aws, cf, monkeypatch):
    # GIVEN records for a, b and c, of which KV holds a and c, listed with an empty
    # page between them
    monkeypatch.setenv("MAX_DELETE_PERCENT", "100")
    store_records(aws, ["a", "b", "c"])
    list_pages(cf, (["a"], "c1"), ([], "c2"), (["c"], ""))
    cf.post(BULK_GET_URL, json=bulk_values_reply({"a": bulk_entry("1")}))
    cf.post(BULK_GET_URL, json=bulk_values_reply({"c": bulk_entry("3")}))

    # WHEN the namespace is synced with delete_missing
    reply = invoke({"all": True, "delete_missing": True})

    # THEN exactly b's record is deleted: the empty page is not a gap in KV
    assert reply["statistics"]["records_deleted"] == 1
    assert values(aws) == {"a": "1", "c": "3"}


# ---------------------------------------------------------- Ratelimit headers


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> float:
    """A monotonic clock that does not move: waits can be read exactly."""
    monkeypatch.setattr(time, "monotonic", lambda: 1_000.0)
    return 1_000.0


def test_cloudflares_budget_reaches_the_limiter(cf, frozen_clock):
    # GIVEN a reply saying the token has no request left for 30 s
    headers = {"Ratelimit": '"default";r=0;t=30', "Ratelimit-Policy": '"default";q=1200;w=300'}
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"), headers=headers)
    limiter = RateLimiter(10_000)
    client = Client(limiter=limiter)

    # WHEN a key is fetched
    client.one("k")

    # THEN the container's limiter knows the next request must wait for the reset
    assert limiter.seconds_until_free() == 30


def test_the_tightest_of_several_limits_is_the_one_observed(cf, frozen_clock):
    # GIVEN a reply reporting two limits, one with plenty left and one nearly used up
    headers = {"Ratelimit": '"default";r=900;t=200, "burst";r=3;t=8'}
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"), headers=headers)
    limiter = RateLimiter(10_000)
    Client(limiter=limiter).one("k")

    # WHEN the limiter is asked how long the next request waits
    wait = limiter.seconds_until_free()

    # THEN it spreads the 3 requests left over the 8 s to the burst limit's reset
    assert wait == pytest.approx(8 / 4)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Ratelimit": "garbage"}, {"Ratelimit": '"default";r=x;t=30'}],
    ids=["none", "garbage", "not-a-number"],
)
def test_a_reply_without_a_readable_budget_changes_nothing(cf, frozen_clock, headers):
    # GIVEN a reply without a Ratelimit header the client can read
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"), headers=headers)
    limiter = RateLimiter(10_000)

    # WHEN a key is fetched
    Client(limiter=limiter).one("k")

    # THEN the next request need not wait
    assert limiter.seconds_until_free() == 0.0


def test_a_call_that_cannot_wait_for_the_reset_is_rate_limited_without_reaching_cloudflare(cf):
    # GIVEN a first reply saying no request is left for the next 120 s, and an
    # invocation with 30 s left
    headers = {"Ratelimit": '"default";r=0;t=120'}
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"), headers=headers)
    client = Client(timeout_ms=30_000)
    client.one("k")

    # WHEN another key is fetched
    with pytest.raises(errors.RateLimitedError) as raised:
        client.one("k")

    # THEN the call is refused as RATE_LIMITED with when to retry, instead of a 429
    assert raised.value.is_retryable is True
    assert raised.value.retry_after is not None and raised.value.retry_after > 30
    assert len(cf.calls) == 1
