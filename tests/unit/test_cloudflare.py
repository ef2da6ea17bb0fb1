"""The Cloudflare KV client (``kv_sync.cloudflare``): bulk reads, listings, retries, deadline.

Cloudflare is ``responses``; sleeps are recorded instead of slept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from kv_sync import cloudflare, errors
from kv_sync.cloudflare import BULK_GET_MAX, SESSION, encode_key, split_timeout
from kv_sync.cloudflare_replies import parse_retry_after
from kv_sync.model import KeyPage, KVEntry
from kv_sync.ratelimit import RateLimiter
from tests.support.cloudflare import (
    BULK_GET_URL,
    KEYS_URL,
    NAMESPACE_URL,
    FakeNamespace,
    bulk_entry,
    bulk_get_reply,
    bulk_values_reply,
    envelope,
    failure,
    list_keys_reply,
)
from tests.support.kv_client import Client, text_entry

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- bulk get


def test_text_value_metadata_and_expiration_come_from_one_bulk_get(cf):
    # GIVEN a key with a value, metadata and an expiry
    cf.post(BULK_GET_URL, json=bulk_get_reply("flag", "on", {"v": 2}, 1_900_000_000))
    client = Client()

    # WHEN it is fetched
    entry = text_entry(client, "flag")

    # THEN one request returned everything, authenticated with the token
    assert entry == KVEntry(key="flag", value=b"on", metadata={"v": 2}, expiration=1_900_000_000)
    assert client.stats.api_calls == 1
    request = cf.calls[0].request
    assert request.headers["Authorization"] == "Bearer tok-abcdefgh"
    assert json.loads(request.body) == {"keys": ["flag"], "type": "text", "withMetadata": True}


def test_many_keys_come_from_one_bulk_get_and_missing_ones_are_none(cf):
    # GIVEN three keys asked for at once, one of which does not exist
    cf.post(
        BULK_GET_URL,
        json=bulk_values_reply({"a": bulk_entry("1"), "b": bulk_entry("2", {"m": 1}), "c": None}),
    )
    client = Client()

    # WHEN they are fetched
    entries = client.kv.get_entries(["a", "b", "c"])

    # THEN one call answered all of them; the missing key is None, not an error
    assert entries == {
        "a": KVEntry("a", b"1", None, None),
        "b": KVEntry("b", b"2", {"m": 1}, None),
        "c": None,
    }
    assert client.stats.api_calls == 1
    assert json.loads(cf.calls[0].request.body)["keys"] == ["a", "b", "c"]


def test_metadata_numbers_are_kept_exact(cf):
    # GIVEN metadata holding a decimal fraction
    cf.post(
        BULK_GET_URL,
        body='{"success":true,"result":{"values":{"k":{"value":"v","metadata":{"pct":0.1}}}}}',
    )

    # WHEN it is fetched
    entry = text_entry(Client(), "k")

    # THEN the number is read as written, not as the nearest binary float
    assert str(entry.metadata["pct"]) == "0.1"


def test_binary_value_falls_back_to_raw_read_and_metadata(cf):
    # GIVEN bulk get refuses a value that is not UTF-8
    payload = b"\x89PNG\r\n\x1a\n\xff\xfe"
    cf.post(BULK_GET_URL, status=400, json=failure(10025, "value is not valid UTF-8"))
    cf.get(f"{NAMESPACE_URL}/values/logo", body=payload, headers={"expiration": "1900000000"})
    cf.get(f"{NAMESPACE_URL}/metadata/logo", json=envelope({"type": "png"}))
    client = Client()

    # WHEN it is fetched
    entry = text_entry(client, "logo")

    # THEN the bytes are intact and metadata/expiry still arrive
    assert entry.value == payload
    assert entry.metadata == {"type": "png"}
    assert entry.expiration == 1_900_000_000
    assert client.stats.api_calls == 3


def test_binary_values_are_isolated_and_text_values_still_come_in_bulk(cf):
    # GIVEN a batch of text values with two binary ones among them
    kv = FakeNamespace()
    texts = {f"t{i:02d}": f"text {i}" for i in range(10)}
    for key, value in texts.items():
        kv.put(key, value, metadata={"i": key})
    kv.put("bin1", b"\xff\x00", metadata={"kind": "bin"}, expiration=1_900_000_000)
    kv.put("bin2", b"\xfe\x01")
    kv.install(cf)
    keys = [*list(texts)[:5], "bin1", *list(texts)[5:], "bin2"]

    # WHEN the batch is fetched
    entries = Client().kv.get_entries(keys)

    # THEN every key has its exact entry
    assert entries["bin1"] == KVEntry("bin1", b"\xff\x00", {"kind": "bin"}, 1_900_000_000)
    assert entries["bin2"] == KVEntry("bin2", b"\xfe\x01", None, None)
    for key, value in texts.items():
        assert entries[key] == KVEntry(key, value.encode(), {"i": key}, None)
    # AND only the binary values were read one by one
    single_reads = {call.request.url for call in cf.calls if "/values/" in (call.request.url or "")}
    assert single_reads == {f"{NAMESPACE_URL}/values/bin1", f"{NAMESPACE_URL}/values/bin2"}


def test_a_binary_key_deleted_before_its_raw_read_is_missing(cf):
    # GIVEN bulk get refuses a binary value, which is then deleted before the raw read
    cf.post(BULK_GET_URL, status=400, json=failure(10025, "not text"))
    cf.get(f"{NAMESPACE_URL}/values/gone", status=404, json=failure(10009, "key not found"))

    # WHEN it is fetched
    # THEN it is reported missing, like any key that does not exist
    assert Client().one("gone") is None


def test_a_value_that_cannot_be_read_fails_that_key_only(cf):
    # GIVEN a batch where one binary value's raw read is refused outright (400)
    cf.get(f"{NAMESPACE_URL}/values/bad", status=400, json=failure(10016, "invalid key"))
    kv = FakeNamespace()
    kv.put("ok", "fine")
    kv.put("bad", b"\xff")
    kv.install(cf)  # after the stub above, which therefore answers first

    # WHEN the batch is fetched
    entries = Client().kv.get_entries(["ok", "bad"])

    # THEN the readable key is there and the other carries its own, final error
    assert entries["ok"] == KVEntry("ok", b"fine", None, None)
    error = entries["bad"]
    assert isinstance(error, errors.ApiError)
    assert error.is_retryable is False


@pytest.mark.parametrize(
    ("key", "segment"),
    [
        ("../../tokens/verify", "..%2F..%2Ftokens%2Fverify"),
        ("a/b?c#d", "a%2Fb%3Fc%23d"),
        ("sp ace+plus%", "sp%20ace%2Bplus%25"),
    ],
)
def test_key_names_are_one_encoded_path_segment(cf, key, segment):
    # GIVEN a binary value (forcing the per-key URL) under an awkward name
    cf.post(BULK_GET_URL, status=400, json=failure(10025, "not text"))
    cf.get(f"{NAMESPACE_URL}/values/{segment}", body=b"\xff")
    cf.get(f"{NAMESPACE_URL}/metadata/{segment}", json=envelope(None))

    # WHEN it is fetched
    Client().one(key)

    # THEN the request path ends in exactly that encoded segment
    assert encode_key(key) == segment
    urls = [call.request.url for call in cf.calls[1:]]
    assert urls == [f"{NAMESPACE_URL}/values/{segment}", f"{NAMESPACE_URL}/metadata/{segment}"]


def test_missing_key_is_none_without_retry(cf):
    # GIVEN a key bulk get says does not exist
    cf.post(BULK_GET_URL, json=bulk_get_reply("gone", None))
    client = Client()

    # WHEN it is fetched
    # THEN it is None (missing, not an error), after one call and no retry
    assert client.one("gone") is None
    assert client.stats.api_calls == 1
    assert client.slept == []


@pytest.mark.parametrize(
    "reply",
    [
        envelope({"values": {"k": {"value": 5}}}),
        envelope({"values": {"k": {"value": "v", "expiration": "soon"}}}),
        envelope({"values": ["k"]}),
        envelope(["not", "an", "object"]),
    ],
    ids=["number-value", "bad-expiration", "values-list", "result-list"],
)
def test_malformed_bulk_reply_is_api_error(cf, reply):
    # GIVEN a 200 envelope whose contents are not what bulk get returns
    cf.post(BULK_GET_URL, json=reply)

    # WHEN the key is fetched
    # THEN the caller gets API_ERROR instead of a wrong value or a crash
    with pytest.raises(errors.ApiError):
        Client().one("k")


def test_bulk_gets_take_at_most_100_keys():
    # GIVEN Cloudflare's limit of 100 keys per bulk get
    # WHEN a caller asks for more in one batch
    # THEN it is refused before any request
    assert BULK_GET_MAX == 100
    with pytest.raises(ValueError, match="1 to 100"):
        Client().kv.get_entries([f"k{i}" for i in range(101)])


# ----------------------------------------------------------------------- listing


def test_list_keys_pages_through_cloudflares_cursor(cf):
    # GIVEN a listing of two pages
    cf.get(KEYS_URL, json=list_keys_reply(["flags/a", "flags/b"], cursor="next-1"))
    cf.get(KEYS_URL, json=list_keys_reply(["flags/c"]))
    client = Client()

    # WHEN both pages are read
    first = client.kv.list_keys("flags/", None, 2)
    second = client.kv.list_keys("flags/", first.cursor, 2)

    # THEN each page has its names, and only the last has no cursor
    assert first == KeyPage(names=["flags/a", "flags/b"], cursor="next-1")
    assert second == KeyPage(names=["flags/c"], cursor=None)
    # AND the requests carried the prefix, the limit and the cursor
    queries = [urlsplit(c.request.url).query for c in cf.calls]
    assert queries == ["limit=2&prefix=flags%2F", "limit=2&prefix=flags%2F&cursor=next-1"]


def test_list_keys_without_prefix_asks_for_everything(cf):
    # GIVEN an empty namespace
    cf.get(KEYS_URL, json=list_keys_reply([]))

    # WHEN it is listed without a prefix
    page = Client().kv.list_keys("", None, 1000)

    # THEN the request asks only for the limit, and the page is empty and last
    assert page == KeyPage(names=[], cursor=None)
    assert urlsplit(cf.calls[0].request.url).query == "limit=1000"


def test_list_keys_of_unknown_namespace_is_a_configuration_error(cf):
    # GIVEN a namespace id Cloudflare does not know
    cf.get(KEYS_URL, status=404, json=failure(10013, "namespace not found"))

    # WHEN its keys are listed
    with pytest.raises(errors.ConfigurationError) as raised:
        Client().kv.list_keys("", None, 1000)

    # THEN the operator is pointed at kv_namespace_id
    assert "kv_namespace_id" in raised.value.message


def test_list_keys_reply_without_a_list_is_api_error(cf):
    # GIVEN a listing envelope without a list of keys
    cf.get(KEYS_URL, json=envelope({"keys": []}))

    # WHEN it is read
    # THEN it is API_ERROR, not an empty listing
    with pytest.raises(errors.ApiError):
        Client().kv.list_keys("", None, 1000)


# ----------------------------------------------------------------------- retries


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_then_succeed(cf, status):
    # GIVEN two failures, then success
    cf.post(BULK_GET_URL, status=status, json=failure(10001, "oops"))
    cf.post(BULK_GET_URL, status=status, body="<html>bad gateway</html>")
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client = Client()

    # WHEN fetched
    entry = text_entry(client, "k")

    # THEN it took three attempts with two bounded backoff sleeps
    assert entry.value == b"v"
    assert client.stats.api_calls == 3
    assert client.stats.retries == 2
    assert len(client.slept) == 2
    assert all(0 < s <= 8.25 for s in client.slept)


def test_retry_budget_exhausted_raises_last_error(cf):
    # GIVEN Cloudflare answering 503 to every attempt
    cf.post(BULK_GET_URL, status=503, json=failure(10001, "down"))
    client = Client(attempts=3)

    # WHEN a key is fetched with three attempts
    with pytest.raises(errors.ApiError) as raised:
        client.one("k")

    # THEN the last error is raised, retryable, after two backoff sleeps
    assert raised.value.is_retryable is True
    assert "HTTP 503" in raised.value.message
    assert client.stats.api_calls == 3
    assert len(client.slept) == 2


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_token_is_auth_error_without_retry(cf, status):
    # GIVEN Cloudflare rejecting the token
    cf.post(BULK_GET_URL, status=status, json=failure(10000, "Authentication error"))
    client = Client()

    # WHEN a key is fetched
    with pytest.raises(errors.AuthError) as raised:
        client.one("k")

    # THEN it is AUTH_ERROR at once: retrying the same token cannot help
    assert raised.value.is_retryable is False
    assert client.slept == []
    assert client.stats.api_calls == 1


def test_unknown_namespace_is_configuration_error_without_retry(cf):
    # GIVEN bulk get answering that the namespace does not exist
    cf.post(BULK_GET_URL, status=404, json=failure(10013, "namespace not found"))
    client = Client()

    # WHEN a key is fetched
    with pytest.raises(errors.ConfigurationError) as raised:
        client.one("k")

    # THEN it is a configuration error naming kv_namespace_id, not retried
    assert "kv_namespace_id" in raised.value.message
    assert client.slept == []
    assert client.stats.api_calls == 1


def test_bad_request_is_never_retried(cf):
    # GIVEN bulk get and the raw read both answer 400
    cf.post(BULK_GET_URL, status=400, json=failure(10000, "nope"))
    cf.get(f"{NAMESPACE_URL}/values/k", status=400, json=failure(10000, "nope"))
    client = Client()

    # WHEN the key is fetched
    entry = client.one("k")

    # THEN the key fails without a retry: 400 from bulk get means "not text",
    # so one raw read follows, and its 400 is final
    assert isinstance(entry, errors.ApiError)
    assert client.slept == []
    assert client.stats.api_calls == 2


def test_retry_after_is_honoured(cf):
    # GIVEN a 429 asking for 2 seconds
    cf.post(
        BULK_GET_URL, status=429, json=failure(10429, "slow down"), headers={"Retry-After": "2"}
    )
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client = Client()

    client.one("k")

    # THEN we waited exactly what Cloudflare asked
    assert client.slept == [2.0]


def test_retry_after_longer_than_cap_is_reported_not_waited(cf):
    # GIVEN a 429 asking for two minutes, more than the 30 s we wait
    cf.post(BULK_GET_URL, status=429, json=failure(10429, "x"), headers={"Retry-After": "120"})
    client = Client()

    # WHEN a key is fetched
    with pytest.raises(errors.RateLimitedError) as raised:
        client.one("k")

    # THEN nothing is waited; the caller gets RATE_LIMITED with the wait
    assert client.slept == []
    assert raised.value.retry_after == 120.0
    assert raised.value.type == "RATE_LIMITED"


def test_deadline_stops_retries_before_they_cannot_finish(cf):
    # GIVEN only 2.5 s left in the invocation and a 429 asking for 2 s
    cf.post(BULK_GET_URL, status=429, json=failure(10429, "x"), headers={"Retry-After": "2"})
    client = Client(timeout_ms=2_500)

    # WHEN fetched
    with pytest.raises(errors.RateLimitedError):
        client.one("k")

    # THEN no second attempt was started: it could not finish before the deadline
    assert client.stats.api_calls == 1
    assert client.slept == []


def test_no_attempt_starts_when_the_deadline_has_passed(cf):
    # GIVEN an invocation with no time left
    client = Client(timeout_ms=100)

    # WHEN a key is fetched
    with pytest.raises(errors.DeadlineError) as raised:
        client.one("k")

    # THEN no request is made; the caller gets TIMEOUT
    assert raised.value.type == "TIMEOUT"
    assert len(cf.calls) == 0


def test_connection_errors_are_retried_as_network_errors(cf):
    # GIVEN a refused connection, then a cut-off body, then an answer
    cf.post(BULK_GET_URL, body=requests.exceptions.ConnectionError("refused"))
    cf.post(BULK_GET_URL, body=requests.exceptions.ChunkedEncodingError("cut"))
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client = Client()

    # WHEN a key is fetched
    # THEN both failures were retried and the value arrived
    assert text_entry(client, "k").value == b"v"
    assert client.stats.retries == 2


def test_connection_errors_that_persist_are_network_error(cf):
    # GIVEN connections that keep being refused
    cf.post(BULK_GET_URL, body=requests.exceptions.ConnectionError("refused"))

    # WHEN a key is fetched
    with pytest.raises(errors.NetworkError) as raised:
        Client(attempts=2).one("k")

    # THEN the caller gets a retryable NETWORK_ERROR
    assert raised.value.type == "NETWORK_ERROR"
    assert raised.value.is_retryable is True


def test_read_timeouts_are_retried_then_reported_as_timeout(cf):
    # GIVEN Cloudflare never answering in time
    cf.post(BULK_GET_URL, body=requests.exceptions.ReadTimeout("slow"))
    client = Client(attempts=2)

    # WHEN a key is fetched with two attempts
    with pytest.raises(errors.DeadlineError) as raised:
        client.one("k")

    # THEN both attempts were made, then TIMEOUT
    assert raised.value.type == "TIMEOUT"
    assert client.stats.api_calls == 2


def test_request_timeout_is_split_and_clamped_to_the_deadline(cf, monkeypatch):
    # GIVEN the timeouts of every request, recorded
    seen: list[tuple[float, float]] = []
    original = SESSION.request

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["timeout"])
        return original(*args, **kwargs)

    monkeypatch.setattr(SESSION, "request", spy)
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))

    # WHEN a key is fetched without a deadline, and with 10 s left
    Client(timeout_ms=None, timeout_s=30).one("k")
    Client(timeout_ms=10_000, timeout_s=30).one("k")

    # THEN the timeout is split into connect and read, and shrinks to fit the deadline
    assert seen[0] == split_timeout(30)
    assert seen[0][0] == 3.05
    assert seen[0][1] == pytest.approx(26.95)
    # 10 s left, less the 1 s safety margin: the whole attempt must fit in 9 s
    connect, read = seen[1]
    assert 2.2 <= connect <= 2.25
    assert connect + read <= 9.0


@pytest.mark.parametrize(("total", "connect"), [(1.0, 0.25), (8.0, 2.0), (60.0, 3.05)])
def test_connect_timeout_is_a_quarter_of_the_timeout_at_most_3_05_s(total, connect):
    # GIVEN API_TIMEOUT_SECONDS
    # WHEN it is split into connect and read timeouts
    # THEN connecting gets a quarter (at most 3.05 s) and reading the rest
    connect_s, read_s = split_timeout(total)
    assert connect_s == pytest.approx(connect)
    assert read_s == pytest.approx(total - connect)


def test_success_false_envelope_is_api_error(cf):
    # GIVEN a 200 envelope saying success: false
    cf.post(BULK_GET_URL, json=failure(10001, "internal"))

    # WHEN a key is fetched
    with pytest.raises(errors.ApiError) as raised:
        Client().one("k")

    # THEN it is API_ERROR carrying Cloudflare's error code
    assert "code 10001" in raised.value.message


def test_error_messages_do_not_carry_the_token(cf):
    # GIVEN Cloudflare rejecting the token
    cf.post(BULK_GET_URL, status=403, json=failure(10000, "Authentication error"))

    # WHEN a key is fetched
    with pytest.raises(errors.AuthError) as raised:
        Client().one("k")

    # THEN the error message never quotes the token
    assert "tok-abcdefgh" not in raised.value.message


def test_garbled_success_body_is_retried_within_the_call(cf):
    # GIVEN a proxy answering 200 with an HTML page once, then the real envelope
    cf.post(BULK_GET_URL, body="<html>maintenance</html>", content_type="text/html")
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client = Client()

    # WHEN fetched
    entry = text_entry(client, "k")

    # THEN the garbled answer was retried like a 5xx
    assert entry.value == b"v"
    assert client.stats.retries == 1
    assert len(client.slept) == 1


def test_client_side_limit_refuses_a_call_that_cannot_wait(cf):
    # GIVEN a container budget of one request, already used
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    limiter = RateLimiter(1)
    client = Client(limiter=limiter)
    client.one("k")

    # WHEN another call is made within the window (the wait would outlast the deadline)
    with pytest.raises(errors.RateLimitedError) as raised:
        client.one("k")

    # THEN it is RATE_LIMITED at once, says when to retry, and never reached Cloudflare
    assert raised.value.retry_after == pytest.approx(limiter.seconds_until_free(), abs=1)
    assert "CLOUDFLARE_REQUESTS_PER_5_MINUTES" in raised.value.message
    assert len(cf.calls) == 1


# ----------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("header", "expected"), [("3", 3.0), ("0", 0.0), (" 7 ", 7.0), (None, None), ("soon", None)]
)
def test_parse_retry_after(header, expected):
    # GIVEN a Retry-After header in seconds, missing or garbled
    # WHEN it is parsed
    # THEN it gives the seconds to wait, or None
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date():
    # GIVEN a Retry-After header that is a date 30 s ahead
    # WHEN it is parsed
    # THEN it gives about 30 s
    value = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert value is not None and 25 <= value <= 31


def test_parse_retry_after_date_in_the_past_is_zero():
    # GIVEN a Retry-After date that has passed
    # WHEN it is parsed
    # THEN there is nothing to wait
    assert parse_retry_after(formatdate(time.time() - 600, usegmt=True)) == 0.0


# ----------------------------------------------------------------------- session


def test_every_client_uses_the_one_pooled_session(cf, monkeypatch):
    # GIVEN two clients, as two warm invocations make them
    used: list[Any] = []
    original = SESSION.request

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append(SESSION)
        return original(*args, **kwargs)

    monkeypatch.setattr(SESSION, "request", spy)
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))

    # WHEN each makes a call
    Client().one("k")
    Client().one("k")

    # THEN both went through the container's session (one connection pool)
    assert used == [cloudflare.SESSION, cloudflare.SESSION]


def fresh_session(**env: str) -> dict[str, Any]:
    """``trust_env`` and ``verify`` of the session a new container makes under ``env``.

    Only this environment (no proxy variables of the developer's shell).
    """
    keep = ("PATH", "HOME", "SYSTEMROOT", "AWS_DEFAULT_REGION", "POWERTOOLS_TRACE_DISABLED")
    base = {name: os.environ[name] for name in keep if name in os.environ}
    code = (
        "import json; from kv_sync.cloudflare import SESSION; "
        "print(json.dumps({'trust_env': SESSION.trust_env, 'verify': SESSION.verify}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env, "PYTHONPATH": str(ROOT / "lambda_function")},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    settings: dict[str, Any] = json.loads(result.stdout)
    return settings


def test_session_reads_the_environment_once_when_no_proxy_is_set():
    # GIVEN a container without proxy variables and with a custom CA bundle
    # WHEN its session is made
    session = fresh_session(REQUESTS_CA_BUNDLE="/etc/ssl/custom.pem")

    # THEN requests does not re-scan the environment per request, and the bundle holds
    assert session == {"trust_env": False, "verify": "/etc/ssl/custom.pem"}


def test_session_honours_proxies_from_the_environment():
    # GIVEN a container whose egress goes through a proxy
    # WHEN its session is made
    session = fresh_session(HTTPS_PROXY="http://proxy.internal:3128")

    # THEN requests keeps reading the proxy settings from the environment
    assert session["trust_env"] is True
