"""Reading the Cloudflare API's replies: statuses, envelopes and entries, as typed errors."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from kv_sync.errors import ApiError, AuthError, NotFoundError, RateLimitedError, SyncError
from kv_sync.model import KVEntry

if TYPE_CHECKING:
    from collections.abc import Callable, Container

    import requests

RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})
KEY_NOT_FOUND_CODE = 10009
_RETRY = Retry()  # only for its Retry-After parser


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delay-seconds or an HTTP-date), if valid."""
    try:
        return _RETRY.parse_retry_after(value) if value else None
    except InvalidHeader:
        return None


def rate_limit(response: requests.Response) -> tuple[int, float, int | None] | None:
    """Cloudflare's report of the token's budget: remaining requests, seconds to reset, quota.

    Headers ``Ratelimit: "default";r=50;t=30`` and ``Ratelimit-Policy:
    "default";q=1200;w=300`` (developers.cloudflare.com/fundamentals/api/reference/limits/);
    of several limits, the one with the fewest requests left.
    """
    limits = [_params(item) for item in response.headers.get("Ratelimit", "").split(",")]
    known = [item for item in limits if "r" in item and "t" in item]
    if not known:
        return None
    tightest = min(known, key=lambda item: item["r"])
    quota = _params(response.headers.get("Ratelimit-Policy", "")).get("q")
    return tightest["r"], float(tightest["t"]), quota


def _params(item: str) -> dict[str, int]:
    """The integer parameters of one structured-field item: ``"name";r=50;t=30``."""
    found = {}
    for part in item.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if value.isdigit():
            found[name] = int(value)
    return found


def check_status(
    response: requests.Response,
    passthrough: Container[int],
    not_found: Callable[[str], SyncError] | None,
) -> requests.Response:
    """The response if its status is a success (or passed through), else its typed error.

    ``not_found`` makes the error of a 404 that is not "key not found" (an
    unknown account or namespace).
    """
    status = response.status_code
    if 200 <= status < 300 or status in passthrough:
        return response
    detail = f"HTTP {status}{describe_errors(response)}"
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


def envelope(response: requests.Response) -> dict[str, Any]:
    """A successful JSON envelope, numbers kept exact (parsed once per response)."""
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
        raise ApiError(f"Cloudflare reported failure{describe_errors(response)}")
    response.kv_envelope = body  # type: ignore[attr-defined]
    return body


def envelope_result(response: requests.Response, *, allow_null: bool = False) -> Any:
    """The ``result`` of an envelope: an object, or anything when ``allow_null``."""
    result = envelope(response).get("result")
    if not allow_null and not isinstance(result, dict):
        raise ApiError("Cloudflare returned an envelope without a result object")
    return result


def bulk_entry(key: str, item: object) -> KVEntry | None:
    """One key of a bulk-get reply; ``None`` when the key does not exist."""
    if item is None:
        return None
    if not isinstance(item, dict) or not isinstance(item.get("value"), str):
        raise ApiError("Cloudflare bulk get returned an entry without a text value")
    return KVEntry(
        key=key,
        value=item["value"].encode("utf-8"),
        metadata=item.get("metadata"),
        expiration=expiration(item.get("expiration")),
    )


def expiration(raw: object) -> int | None:
    """An expiration (epoch seconds) as Cloudflare sends it, in a header or a body."""
    if raw is None or raw == "":
        return None
    try:
        return int(Decimal(str(raw)))
    except ArithmeticError:
        raise ApiError(f"Cloudflare returned an invalid expiration: {str(raw)[:40]!r}") from None


def describe_errors(response: requests.Response) -> str:
    """Cloudflare's error codes and messages, for an error message."""
    parts = [
        f"code {err.get('code')}: {str(err.get('message', ''))[:120]}"
        for err in _errors(response)[:3]
    ]
    return f", {'; '.join(parts)}" if parts else ""


def _errors(response: requests.Response) -> list[dict[str, Any]]:
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [err for err in errors if isinstance(err, dict)] if isinstance(errors, list) else []


def _error_codes(response: requests.Response) -> set[object]:
    return {err.get("code") for err in _errors(response)}
