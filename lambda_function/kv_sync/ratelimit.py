"""Pacing Cloudflare API requests: a client-side window, and the budget Cloudflare reports.

Cloudflare allows 1,200 API requests per 5 minutes per user; going over locks the
account out of the API, dashboard included, for the rest of the window. Two guards:

- a sliding window per container (``CLOUDFLARE_REQUESTS_PER_5_MINUTES``);
- Cloudflare's own ``Ratelimit`` header (remaining requests ``r``, seconds to reset
  ``t``), which counts every client of the token: once fewer than a tenth of the
  quota (at least 20) remain, requests spread what is left over the time to reset.
"""

from __future__ import annotations

import threading
import time
from collections import deque

WINDOW_SECONDS = 300.0
LOW_SHARE, LOW_FLOOR = 0.1, 20  # below max(a tenth of the quota, 20) remaining: slow down


class RateLimiter:
    """At most ``max_requests`` requests in ``window_s`` seconds, paced by Cloudflare's count."""

    def __init__(self, max_requests: int, window_s: float = WINDOW_SECONDS) -> None:
        self.max_requests = max_requests
        self.window_s = window_s
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self._budget: tuple[int, float, int | None] | None = None  # remaining, reset at, quota
        self._last = 0.0

    def observe(self, remaining: int, reset_s: float, quota: int | None) -> None:
        """Take in what Cloudflare reported of the token's budget."""
        with self._lock:
            self._budget = (remaining, time.monotonic() + reset_s, quota)

    def reserve(self, max_wait_s: float) -> float | None:
        """Take a slot, waiting up to ``max_wait_s``; the seconds waited, or ``None``
        (nothing taken) when no slot frees up in time."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                wait = self._wait(now)
                if wait == 0.0:
                    self._sent.append(now)
                    self._last = now
                    if self._budget is not None:
                        remaining, reset_at, quota = self._budget
                        self._budget = (remaining - 1, reset_at, quota)
                    return waited
            if waited + wait > max_wait_s:
                return None
            time.sleep(wait)
            waited += wait

    def seconds_until_free(self) -> float:
        """How long until a slot frees up (0 when one is free now)."""
        with self._lock:
            return self._wait(time.monotonic())

    def _wait(self, now: float) -> float:
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()
        window = (
            self._sent[0] + self.window_s - now if len(self._sent) >= self.max_requests else 0.0
        )
        if self._budget is None or now >= self._budget[1]:
            self._budget = None
            return max(window, 0.0)
        remaining, reset_at, quota = self._budget
        if remaining >= max(LOW_FLOOR, (quota or 0) * LOW_SHARE):
            return max(window, 0.0)
        if remaining <= 0:
            return max(window, reset_at - now)
        spacing = (reset_at - now) / (remaining + 1)
        return max(window, self._last + spacing - now, 0.0)


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_limiter(max_requests: int) -> RateLimiter:
    """The container's limiter; a changed limit (new configuration) starts a fresh window."""
    global _shared  # noqa: PLW0603 - per-container state is the point
    with _shared_lock:
        if _shared is None or _shared.max_requests != max_requests:
            _shared = RateLimiter(max_requests)
        return _shared
