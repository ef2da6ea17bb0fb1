"""The Cloudflare KV client: one call per key, retries, deadline and error mapping."""

from __future__ import annotations

import json

import pytest
import requests

import cloudflare
import errors
from cloudflare import CallStats, KVClient, encode_key, parse_retry_after, split_timeout
from deadline import Deadline
from tests.unit.conftest import (
    ACCOUNT_ID,
    BULK_GET_URL,
    CF_BASE,
    NAMESPACE_ID,
    NAMESPACE_URL,
    FakeContext,
    bulk_get_reply,
    failure,
)


def make_client(
    remaining_ms: int | None = 30_000, attempts: int = 3, timeout_s: float = 30.0
) -> tuple[KVClient, list[float]]:
    slept: list[float] = []
    context = FakeContext(remaining_ms=remaining_ms) if remaining_ms is not None else None
    client = KVClient(
        base_url=CF_BASE,
        api_token="tok",
        account_id=ACCOUNT_ID,
        namespace_id=NAMESPACE_ID,
        timeout_s=timeout_s,
        max_attempts=attempts,
        deadline=Deadline(context),  # type: ignore[arg-type]
        stats=CallStats(),
        sleep=slept.append,
    )
    return client, slept


def test_text_value_metadata_and_expiration_come_from_one_bulk_get(cf):
    # GIVEN a key with a value, metadata and an expiry
    cf.post(BULK_GET_URL, json=bulk_get_reply("flag", "on", {"v": 2}, 1_900_000_000))
    client, _ = make_client()

    # WHEN it is fetched
    entry = client.get_entry("flag")

    # THEN one request returned everything, authenticated with the token
    assert (entry.value, entry.metadata, entry.expiration) == (b"on", {"v": 2}, 1_900_000_000)
    assert client.stats.api_calls == 1
    request = cf.calls[0].request
    assert request.headers["Authorization"] == "Bearer tok"
    assert json.loads(request.body) == {"keys": ["flag"], "type": "text", "withMetadata": True}


def test_binary_value_falls_back_to_raw_read_and_metadata(cf):
    # GIVEN bulk get refuses a value that is not UTF-8
    payload = b"\x89PNG\r\n\x1a\n\xff\xfe"
    cf.post(BULK_GET_URL, status=400, json=failure(10025, "value is not valid UTF-8"))
    cf.get(f"{NAMESPACE_URL}/values/logo", body=payload, headers={"expiration": "1900000000"})
    cf.get(
        f"{NAMESPACE_URL}/metadata/logo",
        json={"success": True, "errors": [], "messages": [], "result": {"type": "png"}},
    )
    client, _ = make_client()

    # WHEN it is fetched
    entry = client.get_entry("logo")

    # THEN the bytes are intact and metadata/expiry still arrive
    assert entry.value == payload
    assert entry.metadata == {"type": "png"}
    assert entry.expiration == 1_900_000_000
    assert client.stats.api_calls == 3


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
    cf.get(
        f"{NAMESPACE_URL}/metadata/{segment}",
        json={"success": True, "errors": [], "messages": [], "result": None},
    )
    client, _ = make_client()

    # WHEN it is fetched
    client.get_entry(key)

    # THEN the request path ends in exactly that encoded segment
    assert encode_key(key) == segment
    urls = [call.request.url for call in cf.calls[1:]]
    assert urls == [f"{NAMESPACE_URL}/values/{segment}", f"{NAMESPACE_URL}/metadata/{segment}"]


def test_missing_key_is_not_found_without_retry(cf):
    cf.post(BULK_GET_URL, json=bulk_get_reply("gone", None))
    client, slept = make_client()

    with pytest.raises(errors.NotFoundError) as raised:
        client.get_entry("gone")

    assert raised.value.is_retryable is False
    assert client.stats.api_calls == 1
    assert slept == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_then_succeed(cf, status):
    # GIVEN two failures, then success
    cf.post(BULK_GET_URL, status=status, json=failure(10001, "oops"))
    cf.post(BULK_GET_URL, status=status, body="<html>bad gateway</html>")
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client, slept = make_client()

    # WHEN fetched
    entry = client.get_entry("k")

    # THEN it took three attempts with two backoff sleeps that grow
    assert entry.value == b"v"
    assert client.stats.api_calls == 3
    assert client.stats.retries == 2
    assert len(slept) == 2
    assert all(0 < s <= 8.25 for s in slept)


def test_retry_budget_exhausted_raises_last_error(cf):
    cf.post(BULK_GET_URL, status=503, json=failure(10001, "down"))
    client, slept = make_client(attempts=3)

    with pytest.raises(errors.ApiError) as raised:
        client.get_entry("k")

    assert raised.value.is_retryable is True
    assert "HTTP 503" in raised.value.message
    assert client.stats.api_calls == 3
    assert len(slept) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_client_errors_are_never_retried(cf, status):
    cf.post(BULK_GET_URL, status=status, json=failure(10000, "nope"))
    cf.get(f"{NAMESPACE_URL}/values/k", status=status, json=failure(10000, "nope"))
    client, slept = make_client()

    with pytest.raises(errors.SyncError):
        client.get_entry("k")

    assert slept == []
    # 400 from bulk get means "not text": one raw read follows, also not retried
    assert client.stats.api_calls == (2 if status == 400 else 1)


def test_retry_after_is_honoured(cf):
    # GIVEN a 429 asking for 2 seconds
    cf.post(
        BULK_GET_URL, status=429, json=failure(10429, "slow down"), headers={"Retry-After": "2"}
    )
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client, slept = make_client()

    client.get_entry("k")

    # THEN we waited exactly what Cloudflare asked
    assert slept == [2.0]


def test_retry_after_longer_than_cap_is_reported_not_waited(cf):
    cf.post(BULK_GET_URL, status=429, json=failure(10429, "x"), headers={"Retry-After": "120"})
    client, slept = make_client()

    with pytest.raises(errors.RateLimitedError) as raised:
        client.get_entry("k")

    assert slept == []
    assert raised.value.retry_after == 120.0
    assert raised.value.type == "RATE_LIMITED"


def test_deadline_stops_retries_before_they_cannot_finish(cf):
    # GIVEN only 2.5 s left in the invocation and a 429 asking for 2 s
    cf.post(BULK_GET_URL, status=429, json=failure(10429, "x"), headers={"Retry-After": "2"})
    client, slept = make_client(remaining_ms=2_500)

    # WHEN fetched
    with pytest.raises(errors.RateLimitedError):
        client.get_entry("k")

    # THEN no second attempt was started: it could not finish before the deadline
    assert client.stats.api_calls == 1
    assert slept == []


def test_no_attempt_starts_when_the_deadline_has_passed(cf):
    client, _ = make_client(remaining_ms=100)

    with pytest.raises(errors.DeadlineError) as raised:
        client.get_entry("k")

    assert raised.value.type == "TIMEOUT"
    assert len(cf.calls) == 0


def test_connection_errors_are_retried_as_network_errors(cf):
    cf.post(BULK_GET_URL, body=requests.exceptions.ConnectionError("refused"))
    cf.post(BULK_GET_URL, body=requests.exceptions.ChunkedEncodingError("cut"))
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client, _ = make_client()

    assert client.get_entry("k").value == b"v"
    assert client.stats.retries == 2


def test_read_timeouts_are_retried_then_reported_as_timeout(cf):
    cf.post(BULK_GET_URL, body=requests.exceptions.ReadTimeout("slow"))
    client, _ = make_client(attempts=2)

    with pytest.raises(errors.DeadlineError) as raised:
        client.get_entry("k")

    assert raised.value.type == "TIMEOUT"
    assert client.stats.api_calls == 2


def test_request_timeout_is_split_and_clamped_to_the_deadline(cf, monkeypatch):
    seen: list[tuple[float, float]] = []
    original = cloudflare.SESSION.request

    def spy(*args, **kwargs):
        seen.append(kwargs["timeout"])
        return original(*args, **kwargs)

    monkeypatch.setattr(cloudflare.SESSION, "request", spy)
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))

    make_client(remaining_ms=None, timeout_s=30)[0].get_entry("k")
    make_client(remaining_ms=10_000, timeout_s=30)[0].get_entry("k")

    assert seen[0] == split_timeout(30)
    assert seen[0][0] == 3.05
    assert seen[0][1] == pytest.approx(26.95)
    # 10 s left, less the 1 s safety margin: the whole attempt must fit in 9 s
    connect, read = seen[1]
    assert 2.2 <= connect <= 2.25
    assert connect + read <= 9.0


def test_success_false_envelope_is_api_error(cf):
    cf.post(BULK_GET_URL, json=failure(10001, "internal"))
    client, _ = make_client()

    with pytest.raises(errors.ApiError) as raised:
        client.get_entry("k")

    assert "code 10001" in raised.value.message


def test_error_messages_do_not_carry_the_token(cf):
    cf.post(BULK_GET_URL, status=403, json=failure(10000, "Authentication error"))
    client, _ = make_client()

    with pytest.raises(errors.AuthError) as raised:
        client.get_entry("k")

    assert "tok" not in raised.value.message.replace("token", "")


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), ("1.5", 1.5), (None, None), ("soon", None)],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date():
    import time
    from email.utils import formatdate

    value = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert value is not None and 25 <= value <= 31


def test_one_session_is_shared_by_every_client():
    first, _ = make_client()
    second, _ = make_client()
    assert first._session is second._session is cloudflare.SESSION


def test_garbled_success_body_is_retried_within_the_call(cf):
    # GIVEN a proxy answering 200 with an HTML page once, then the real envelope
    cf.post(BULK_GET_URL, body="<html>maintenance</html>", content_type="text/html")
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    client, slept = make_client()

    # WHEN fetched
    entry = client.get_entry("k")

    # THEN the garbled answer was retried like a 5xx
    assert entry.value == b"v"
    assert client.stats.retries == 1
    assert len(slept) == 1


def test_session_reads_the_environment_once_when_no_proxy_is_set(monkeypatch):
    # GIVEN no proxy variables and a custom CA bundle
    for name in (
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/custom.pem")

    # WHEN the container's session is made
    session = cloudflare._new_session()

    # THEN requests does not re-scan the environment per request, and the bundle holds
    assert session.trust_env is False
    assert session.verify == "/etc/ssl/custom.pem"


def test_session_honours_proxies_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")

    session = cloudflare._new_session()

    assert session.trust_env is True
