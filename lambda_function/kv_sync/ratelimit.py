"""A client-side limit on Cloudflare API requests, shared by the container's invocations.

Cloudflare allows 1,200 API requests per 5 minutes per user; going over locks
the account out of the API for the rest of the window. A big sync therefore
paces itself below that with a sliding window.
"""

from __future__ import annotations

import threading
import time
from collections import deque

WINDOW_SECONDS = 300.0


class RateLimiter:
    """At most ``max_requests`` requests in any ``window_s`` seconds."""

    def __init__(self, max_requests: int, window_s: float = WINDOW_SECONDS) -> None:
        self.max_requests = max_requests
        self.window_s = window_s
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def reserve(self, max_wait_s: float) -> float | None:
        """Take a slot, waiting up to ``max_wait_s``; the seconds waited, or ``None``
        (nothing taken) when no slot frees up in time."""
        waited = 0.0
        while True:
            with self._lock:
                wait = self._wait(time.monotonic())
                if wait == 0.0:
                    self._sent.append(time.monotonic())
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
        if len(self._sent) < self.max_requests:
            return 0.0
        return self._sent[0] + self.window_s - now


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_limiter(max_requests: int) -> RateLimiter:
    """The container's limiter; a changed limit (new configuration) starts a fresh window."""
    global _shared  # noqa: PLW0603 - per-container state is the point
    with _shared_lock:
        if _shared is None or _shared.max_requests != max_requests:
            _shared = RateLimiter(max_requests)
        return _shared
