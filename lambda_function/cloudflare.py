"""Cloudflare Workers KV API client.

One pooled ``requests`` session serves every warm invocation, so a container
keeps one TCP/TLS connection to Cloudflare. Every call is retried by tenacity
on 429, 500/502/503/504, connection errors and read timeouts, with exponential
backoff and jitter, honouring ``Retry-After``, and never starting an attempt
that could not finish before the Lambda deadline.
"""

from __future__ import annotations

import email.utils
import json
import os
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode
from urllib.request import getproxies

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

import ratelimit
from errors import (
    ApiError,
    AuthError,
    ConfigurationError,
    DeadlineError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    SyncError,
)
from observability import logger
from redaction import redact

if TYPE_CHECKING:
    from collections.abc import Callable

    from deadline import Deadline
    from ratelimit import RateLimiter

    NotFoundFactory = Callable[[str], SyncError]

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
# Longest Retry-After we wait for inside one invocation; a longer one is
# reported to the caller (RATE_LIMITED with Retry-After) instead.
RETRY_AFTER_CAP_S = 30.0
# An attempt needs at least this long to be worth starting.
MIN_ATTEMPT_S = 0.5
CONNECT_TIMEOUT_CAP_S = 3.05
KEY_NOT_FOUND_CODE = 10009
BULK_GET_MAX = 100
LIST_LIMIT = 1000

_backoff = wait_exponential_jitter(multiplier=0.25, max=8.0, jitter=0.25)


def _new_session() -> requests.Session:
    session = requests.Session()
    # Retries belong to tenacity, not urllib3.
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "kv-sync/1.0"
    if not getproxies():
        # With trust_env, requests re-reads the environment (proxies, ~/.netrc, CA
        # bundle) on every request: about 0.7 ms a call. Without proxies to honour,
        # read the CA bundle setting once instead; the environment does not change
        # within a container.
        session.trust_env = False
        session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
    return session


# Module level on purpose: reused by every warm invocation of this container.
SESSION = _new_session()


@dataclass(frozen=True)
class KVEntry:
    """One KV key as Cloudflare holds it."""

    key: str
    value: bytes
    metadata: Any
    expiration: int | None


@dataclass(frozen=True)
class KeyPage:
    """One page of a key listing; ``cursor`` is ``None`` on the last page."""

    names: list[str]
    cursor: str | None


@dataclass
class CallStats:
    """Counts reported in the response statistics and metrics (thread-safe)."""

    api_calls: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, api_calls: int = 0, retries: int = 0) -> None:
        """Count calls and retries; worker threads share one instance."""
        with self._lock:
            self.api_calls += api_calls
            self.retries += retries


def encode_key(key: str) -> str:
    """Percent-encode a key name as exactly one URL path segment."""
    return quote(key, safe="")


def split_timeout(total_s: float) -> tuple[float, float]:
    """Split the per-request timeout into (connect, read)."""
    connect = min(CONNECT_TIMEOUT_CAP_S, total_s / 4)
    return connect, total_s - connect


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class KVClient:
    """Reads KV entries for one account and namespace.

    Parameters
    ----------
    base_url
        API base, e.g. ``https://api.cloudflare.com/client/v4``.
    api_token, account_id, namespace_id
        From the credentials secret.
    timeout_s
        Per-request timeout, split into connect and read.
    max_attempts
        Attempts per call, including the first.
    deadline
        The invocation's time budget.
    stats
        Counters updated as calls are made.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_token: str,
        account_id: str,
        namespace_id: str,
        timeout_s: float,
        max_attempts: int,
        deadline: Deadline,
        stats: CallStats,
        session: requests.Session = SESSION,
        sleep: Callable[[float], None] | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._namespace_url = (
            f"{base_url}/accounts/{quote(account_id, safe='')}"
            f"/storage/kv/namespaces/{quote(namespace_id, safe='')}"
        )
        self._headers = {"Authorization": f"Bearer {api_token}"}
        self._connect_timeout, self._read_timeout = split_timeout(timeout_s)
        self._max_attempts = max_attempts
        self._deadline = deadline
        self._session = session
        self._sleep = sleep or time.sleep
        self._limiter = limiter or ratelimit.shared_limiter(ratelimit.CLOUDFLARE_DEFAULT_LIMIT)
        self.stats = stats

    def get_entry(self, key: str) -> KVEntry:
        """Fetch a key's value bytes, metadata and expiration.

        One bulk-get call returns all three for text values; values that are
        not valid UTF-8 (which bulk get cannot return) fall back to a value
        read and a metadata read.

        Raises
        ------
        NotFoundError
            The key does not exist.
        SyncError
            Any other failure, after retries.
        """
        found = self.get_entries([key])[key]
        if isinstance(found, SyncError):
            raise found
        if found is None:
            raise NotFoundError(f"Key '{key}' does not exist in the KV namespace")
        return found

    def get_entries(self, keys: list[str]) -> dict[str, KVEntry | SyncError | None]:
        """Fetch up to ``BULK_GET_MAX`` keys with as few calls as possible.

        Returns each key's entry, ``None`` when the key does not exist, or the
        error that stopped that one key from being read. Bulk get refuses a
        whole batch when one value is not text; such a batch is split in
        halves until the binary values are isolated and read one by one.

        Raises
        ------
        SyncError
            A failure that concerns the whole batch (auth, rate limit, outage).
        """
        if not 0 < len(keys) <= BULK_GET_MAX:
            raise ValueError(f"bulk get takes 1 to {BULK_GET_MAX} keys, got {len(keys)}")
        response = self._call(
            "POST",
            f"{self._namespace_url}/bulk/get",
            json_body={"keys": keys, "type": "text", "withMetadata": True},
            passthrough={400},
            not_found=self._namespace_not_found,
        )
        if response.status_code == 400:
            if len(keys) == 1:
                return {keys[0]: self._get_raw_or_error(keys[0])}
            middle = len(keys) // 2
            return {**self.get_entries(keys[:middle]), **self.get_entries(keys[middle:])}
        values = _envelope_result(response).get("values")
        if not isinstance(values, dict):
            raise ApiError("Cloudflare bulk get returned no 'values' object")
        return {key: _bulk_entry(key, values.get(key)) for key in keys}

    def list_keys(self, prefix: str, cursor: str | None, limit: int = LIST_LIMIT) -> KeyPage:
        """One page of key names (sorted by their UTF-8 bytes) under a prefix.

        Raises
        ------
        SyncError
            The listing failed after retries.
        """
        params = {"limit": str(limit)}
        if prefix:
            params["prefix"] = prefix
        if cursor:
            params["cursor"] = cursor
        response = self._call(
            "GET",
            f"{self._namespace_url}/keys?{urlencode(params)}",
            not_found=self._namespace_not_found,
        )
        body = _envelope(response)
        result = body.get("result")
        if not isinstance(result, list):
            raise ApiError("Cloudflare list keys returned no list of keys")
        names = [item["name"] for item in result if isinstance(item, dict) and "name" in item]
        info = body.get("result_info")
        next_cursor = info.get("cursor") if isinstance(info, dict) else None
        return KeyPage(names=names, cursor=next_cursor or None)

    def _get_raw_or_error(self, key: str) -> KVEntry | SyncError | None:
        try:
            return self._get_raw(key)
        except NotFoundError:
            return None
        except SyncError as exc:
            if exc.is_retryable or isinstance(exc, AuthError | ConfigurationError):
                raise
            return exc

    def _get_raw(self, key: str) -> KVEntry:
        segment = encode_key(key)
        value_response = self._call("GET", f"{self._namespace_url}/values/{segment}", raw=True)
        metadata_response = self._call("GET", f"{self._namespace_url}/metadata/{segment}")
        return KVEntry(
            key=key,
            value=value_response.content,
            metadata=_envelope_result(metadata_response, allow_null=True),
            expiration=_expiration(value_response.headers.get("expiration")),
        )

    @staticmethod
    def _namespace_not_found(detail: str) -> SyncError:
        return ConfigurationError(
            "Cloudflare does not know this account or namespace "
            f"({detail}); check account_id and kv_namespace_id in the secret"
        )

    def _call(
        self,
        method: str,
        url: str,
        *,
        json_body: object | None = None,
        passthrough: set[int] | None = None,
        not_found: NotFoundFactory | None = None,
        raw: bool = False,
    ) -> requests.Response:
        """One API call with retries; ``raw`` replies are bytes, the others JSON envelopes."""
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, SyncError) and exc.is_retryable),
            wait=self._wait,
            stop=self._stop,
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                return self._attempt(
                    method, url, json_body, passthrough or set(), not_found, raw=raw
                )
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _attempt(
        self,
        method: str,
        url: str,
        json_body: object | None,
        passthrough: set[int],
        not_found: NotFoundFactory | None,
        *,
        raw: bool,
    ) -> requests.Response:
        budget = self._deadline.budget()
        if budget < MIN_ATTEMPT_S:
            raise DeadlineError(
                "Not enough time left before the Lambda deadline to call Cloudflare; "
                "raise the function timeout or lower API_TIMEOUT_SECONDS"
            )
        waited = self._limiter.reserve(budget - MIN_ATTEMPT_S)
        if waited is None:
            raise RateLimitedError(
                "Client-side limit of "
                f"{self._limiter.max_requests} Cloudflare requests per 5 minutes reached; "
                "continue later (CLOUDFLARE_REQUESTS_PER_5_MINUTES sets the limit)",
                retry_after=self._limiter.seconds_until_free(),
            )
        if waited:
            budget = self._deadline.budget()
        # Near the deadline, shrink both timeouts so the attempt ends in time.
        connect = min(self._connect_timeout, budget / 4)
        read = min(self._read_timeout, budget - connect)
        self.stats.add(api_calls=1)
        try:
            response = self._session.request(
                method, url, headers=self._headers, json=json_body, timeout=(connect, read)
            )
        except requests.exceptions.ConnectTimeout:
            raise NetworkError(f"Timed out connecting to Cloudflare after {connect:.1f}s") from None
        except requests.exceptions.ReadTimeout:
            raise DeadlineError(f"Cloudflare did not answer within {read:.1f}s") from None
        except requests.exceptions.RequestException as exc:
            raise NetworkError(
                f"Connection to Cloudflare failed ({type(exc).__name__}); it will be retried"
            ) from None
        try:
            checked = _check_status(response, passthrough, not_found)
            if checked.ok and not raw:
                # Read JSON replies inside the attempt, so that a garbled body (an
                # HTML page from a proxy, a cut-off envelope) is retried too.
                _envelope(checked)
            return checked
        except SyncError as exc:
            # Cloudflare's error text is quoted in messages; it may echo the token.
            exc.message = redact(exc.message)
            exc.args = (exc.message,)
            raise

    def _wait(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, SyncError) and exc.retry_after is not None:
            return exc.retry_after
        return float(_backoff(retry_state))

    def _stop(self, retry_state: RetryCallState) -> bool:
        if retry_state.attempt_number >= self._max_attempts:
            return True
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, SyncError) and (exc.retry_after or 0) > RETRY_AFTER_CAP_S:
            return True
        sleep = retry_state.upcoming_sleep or 0.0
        return self._deadline.budget() - sleep < MIN_ATTEMPT_S

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        self.stats.add(retries=1)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        logger.warning(
            "Retrying Cloudflare call",
            extra={
                "attempt": retry_state.attempt_number,
                "error_type": getattr(exc, "type", type(exc).__name__),
                "sleep_s": round(retry_state.upcoming_sleep or 0.0, 3),
            },
        )


def _check_status(
    response: requests.Response, passthrough: set[int], not_found: NotFoundFactory | None
) -> requests.Response:
    status = response.status_code
    if 200 <= status < 300 or status in passthrough:
        return response
    detail = f"HTTP {status}{_describe_errors(response)}"
    if status in (401, 403):
        raise AuthError(
            f"Cloudflare rejected the API token ({detail}); check that it is valid, "
            "not expired, and has 'Workers KV Storage Read' on this account"
        )
    if status == 404:
        if not_found is not None and KEY_NOT_FOUND_CODE not in _error_codes(response):
            raise not_found(detail)
        raise NotFoundError(f"Key does not exist in the KV namespace ({detail})")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        raise RateLimitedError(
            f"Cloudflare rate limit hit ({detail}); the account allows 1,200 requests "
            "per 5 minutes",
            retry_after=retry_after,
        )
    retryable = status in RETRYABLE_STATUSES
    raise ApiError(
        f"Cloudflare API error ({detail})",
        is_retryable=retryable,
        retry_after=retry_after if retryable else None,
    )


def _errors(response: requests.Response) -> list[dict[str, Any]]:
    """The ``errors`` of a Cloudflare failure envelope ([] when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    return [err for err in errors if isinstance(err, dict)]


def _error_codes(response: requests.Response) -> set[object]:
    return {err.get("code") for err in _errors(response)}


def _describe_errors(response: requests.Response) -> str:
    """Cloudflare's error codes and messages, for an error message."""
    parts = [
        f"code {err.get('code')}: {str(err.get('message', ''))[:120]}"
        for err in _errors(response)[:3]
    ]
    return f", {'; '.join(parts)}" if parts else ""


def _envelope(response: requests.Response) -> dict[str, Any]:
    """A successful Cloudflare JSON envelope, numbers kept exact (parsed once)."""
    cached: dict[str, Any] | None = getattr(response, "kv_envelope", None)
    if cached is not None:
        return cached
    try:
        body = json.loads(response.content, parse_float=Decimal)
    except (ValueError, RecursionError):
        raise ApiError(
            f"Cloudflare returned a body that is not JSON (HTTP {response.status_code})",
            is_retryable=True,
        ) from None
    if not isinstance(body, dict) or body.get("success") is not True:
        raise ApiError(f"Cloudflare reported failure{_describe_errors(response)}")
    response.kv_envelope = body  # type: ignore[attr-defined]
    return body


def _envelope_result(response: requests.Response, *, allow_null: bool = False) -> Any:
    """The ``result`` object of a Cloudflare envelope (``None`` only if allowed)."""
    result = _envelope(response).get("result")
    if allow_null:
        return result
    if not isinstance(result, dict):
        raise ApiError("Cloudflare returned an envelope without a result object")
    return result


def _bulk_entry(key: str, item: object) -> KVEntry | None:
    if item is None:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("value"), str):
        raise ApiError("Cloudflare bulk get returned an entry without a text value")
    return KVEntry(
        key=key,
        value=item["value"].encode("utf-8"),
        metadata=item.get("metadata"),
        expiration=_expiration(item.get("expiration")),
    )


def _expiration(raw: object) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(Decimal(str(raw)))
    except ArithmeticError:
        raise ApiError(f"Cloudflare returned an invalid expiration: {str(raw)[:40]!r}") from None
