"""The Cloudflare Workers KV API client.

One pooled ``requests`` session serves every warm invocation, so a container
keeps one TCP/TLS connection to Cloudflare. tenacity retries each call on 429,
500/502/503/504, connection errors, garbled bodies and read timeouts, with
exponential backoff and jitter, honouring ``Retry-After``, and never starts an
attempt that could not finish before the Lambda deadline.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode
from urllib.request import getproxies

import requests
from requests.adapters import HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential_jitter

from kv_sync import cloudflare_replies as replies
from kv_sync.errors import (
    ApiError,
    AuthError,
    ConfigurationError,
    DeadlineError,
    NetworkError,
    NotFoundError,
    RateLimitedError,
    SyncError,
)
from kv_sync.model import KeyPage, KVEntry
from kv_sync.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from kv_sync.credentials import CloudflareCredentials
    from kv_sync.model import CallStats
    from kv_sync.ratelimit import RateLimiter
    from kv_sync.runtime import Deadline
    from kv_sync.settings import Settings

# A longer Retry-After is not waited for but returned (RATE_LIMITED, Retry-After).
RETRY_AFTER_CAP_S = 30.0
MIN_ATTEMPT_S = 0.5  # an attempt needs at least this long to be worth starting
CONNECT_TIMEOUT_CAP_S = 3.05
BULK_GET_MAX = 100
LIST_LIMIT = 1000
_SPLIT = frozenset({400, 413})  # bulk get statuses answered by halving the batch
_REPLACEMENT = "\ufffd".encode()
_backoff = wait_exponential_jitter(multiplier=0.25, max=8.0, jitter=0.25)


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=16, max_retries=0)  # tenacity retries
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = "kv-sync/1.0"
    if not getproxies():
        # With trust_env, requests re-reads proxies, .netrc and the CA bundle from the
        # environment on every request (about 0.7 ms). With no proxy to honour, read the
        # CA bundle setting once: a container's environment does not change.
        session.trust_env = False
        session.verify = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        )
    return session


SESSION = _new_session()  # module level: every warm invocation of the container reuses it


def encode_key(key: str) -> str:
    """Percent-encode a key name as exactly one URL path segment."""
    return quote(key, safe="")


def split_timeout(total_s: float) -> tuple[float, float]:
    """Split the per-request timeout into (connect, read)."""
    connect = min(CONNECT_TIMEOUT_CAP_S, total_s / 4)
    return connect, total_s - connect


class KVClient:
    """Reads the keys, values, metadata and expirations of the credentials' namespace.

    Parameters
    ----------
    creds, settings
        Token, account and namespace; API base, timeout and attempts per call.
    deadline, stats, limiter
        The invocation's time budget, its call counters, the container's rate limit.
    """

    def __init__(
        self,
        creds: CloudflareCredentials,
        settings: Settings,
        deadline: Deadline,
        stats: CallStats,
        limiter: RateLimiter,
        *,
        session: requests.Session = SESSION,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        account, namespace = encode_key(creds.account_id), encode_key(creds.namespace_id)
        self._url = f"{settings.api_base_url}/accounts/{account}/storage/kv/namespaces/{namespace}"
        self._headers = {"Authorization": f"Bearer {creds.api_token}"}
        self._connect_timeout, self._read_timeout = split_timeout(settings.api_timeout_seconds)
        self._max_attempts = settings.retry_max_attempts
        self._deadline, self._stats, self._limiter = deadline, stats, limiter
        self._session, self._sleep = session, sleep

    def get_entries(self, keys: list[str]) -> dict[str, KVEntry | SyncError | None]:
        """Up to ``BULK_GET_MAX`` keys, in as few calls as possible.

        Each key maps to its entry, ``None`` when it does not exist, or the
        error that kept that key from being read. Bulk get refuses a batch that
        holds a value that is not text (400) or whose values pass 25 MB (413): such
        a batch is halved until the culprits are alone, and they are read one by one.

        Raises
        ------
        SyncError
            A failure of the whole batch (auth, rate limit, outage).
        """
        if not 0 < len(keys) <= BULK_GET_MAX:
            raise ValueError(f"bulk get takes 1 to {BULK_GET_MAX} keys, got {len(keys)}")
        body = {"keys": keys, "type": "text", "withMetadata": True}
        response = self._call("POST", "/bulk/get", json_body=body, passthrough=_SPLIT)
        if response.status_code in _SPLIT:
            if len(keys) == 1:
                return {keys[0]: self._read_one(keys[0])}
            middle = len(keys) // 2
            return {**self.get_entries(keys[:middle]), **self.get_entries(keys[middle:])}
        values = replies.envelope_result(response).get("values")
        if not isinstance(values, dict):
            raise ApiError("Cloudflare bulk get returned no 'values' object")
        entries = {key: replies.bulk_entry(key, values.get(key)) for key in keys}
        # Text with U+FFFD may be a value bulk get decoded lossily: read its exact bytes.
        lossy = [key for key, entry in entries.items() if entry and _REPLACEMENT in entry.value]
        return entries | {key: self._read_one(key) for key in lossy}

    def list_keys(self, prefix: str, cursor: str | None, limit: int = LIST_LIMIT) -> KeyPage:
        """One page of key names under ``prefix``, sorted by their UTF-8 bytes."""
        params = {"limit": str(limit), "prefix": prefix, "cursor": cursor or ""}
        query = urlencode({name: value for name, value in params.items() if value})
        body = replies.envelope(self._call("GET", f"/keys?{query}"))
        result, info = body.get("result"), body.get("result_info")
        if not isinstance(result, list):
            raise ApiError("Cloudflare list keys returned no list of keys")
        names = [item["name"] for item in result if isinstance(item, dict) and "name" in item]
        next_cursor = info.get("cursor") if isinstance(info, dict) else None
        return KeyPage(names=names, cursor=next_cursor or None)

    def _read_one(self, key: str) -> KVEntry | SyncError | None:
        """A value bulk get cannot return: its raw bytes, plus a metadata read."""
        try:
            value = self._call("GET", f"/values/{encode_key(key)}", raw=True)
            metadata = self._call("GET", f"/metadata/{encode_key(key)}", key_read=True)
        except NotFoundError:
            return None
        except SyncError as exc:
            if exc.is_retryable or isinstance(exc, AuthError | ConfigurationError):
                raise
            return exc
        return KVEntry(
            key=key,
            value=value.content,
            metadata=replies.envelope_result(metadata, allow_null=True),
            expiration=replies.expiration(value.headers.get("expiration")),
        )

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: object | None = None,
        passthrough: frozenset[int] = frozenset(),
        raw: bool = False,
        key_read: bool = False,
    ) -> requests.Response:
        """One call with retries. ``raw`` replies are bytes, others JSON envelopes; a
        404 is the key's own only for ``raw``/``key_read`` calls, else the namespace's."""
        retrying = Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, SyncError) and exc.is_retryable),
            wait=self._wait,
            stop=self._stop,
            before_sleep=self._before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        not_found = None if raw or key_read else _namespace_not_found
        for attempt in retrying:
            with attempt:
                response = replies.check_status(
                    self._attempt(method, self._url + path, json_body), passthrough, not_found
                )
                if response.ok and not raw:
                    # Parsed inside the attempt, so that a garbled body (a proxy's HTML
                    # page, a cut-off envelope) is retried too.
                    replies.envelope(response)
                return response
        raise AssertionError("unreachable: tenacity returns or raises")

    def _attempt(self, method: str, url: str, json_body: object | None) -> requests.Response:
        budget = self._deadline.budget()
        if budget < MIN_ATTEMPT_S:
            raise DeadlineError(
                "Not enough time left before the Lambda deadline to call Cloudflare; "
                "raise the function timeout or lower API_TIMEOUT_SECONDS"
            )
        waited = self._limiter.reserve(budget - MIN_ATTEMPT_S)
        if waited is None:
            raise RateLimitedError(
                f"Client-side limit of {self._limiter.max_requests} Cloudflare requests "
                "per 5 minutes reached; continue later (CLOUDFLARE_REQUESTS_PER_5_MINUTES)",
                retry_after=self._limiter.seconds_until_free(),
            )
        budget = self._deadline.budget() if waited else budget
        # Near the deadline, both timeouts shrink so that the attempt ends in time.
        connect = min(self._connect_timeout, budget / 4)
        read = min(self._read_timeout, budget - connect)
        self._stats.add(api_calls=1)
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
        budget_left = replies.rate_limit(response)
        if budget_left is not None:
            self._limiter.observe(*budget_left)
        return response

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, SyncError) and exc.retry_after is not None:
            return exc.retry_after
        return float(_backoff(state))

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        return (
            state.attempt_number >= self._max_attempts
            or (isinstance(exc, SyncError) and (exc.retry_after or 0) > RETRY_AFTER_CAP_S)
            or self._deadline.budget() - (state.upcoming_sleep or 0.0) < MIN_ATTEMPT_S
        )

    def _before_sleep(self, state: RetryCallState) -> None:
        self._stats.add(retries=1)
        exc = state.outcome.exception() if state.outcome else None
        sleep_s = round(state.upcoming_sleep or 0.0, 3)
        error_type = getattr(exc, "type", type(exc).__name__)
        logger.warning(
            "Retrying Cloudflare call",
            extra={"attempt": state.attempt_number, "error_type": error_type, "sleep_s": sleep_s},
        )


def _namespace_not_found(detail: str) -> SyncError:
    return ConfigurationError(
        f"Cloudflare does not know this account or namespace ({detail}); "
        "check account_id and kv_namespace_id in the secret"
    )
