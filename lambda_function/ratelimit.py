"""A client-side limit on Cloudflare API requests.

Cloudflare allows 1,200 API requests per 5 minutes per user; going over locks the
account out of the API for the rest of the window. A big sync therefore paces
itself below that, per container, with a sliding window.
"""

from __future__ import annotations

import threading
import time
from collections import deque

WINDOW_SECONDS = 300.0
# Cloudflare's documented global API limit per user, per window.
CLOUDFLARE_DEFAULT_LIMIT = 1200


class RateLimiter:
    """At most ``max_requests`` acquisitions in any ``window_s`` seconds.

    Parameters
    ----------
    max_requests
        Requests allowed per window.
    window_s
        Window length in seconds.
    """

    def __init__(self, max_requests: int, window_s: float = WINDOW_SECONDS) -> None:
        self.max_requests = max_requests
        self.window_s = window_s
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def reserve(self, max_wait_s: float) -> float | None:
        """Take a slot, waiting up to ``max_wait_s`` for one.

        Returns the seconds waited, or ``None`` (taking nothing) when no slot
        frees up in time; the caller reports that as rate limiting.
        """
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                while self._sent and self._sent[0] <= now - self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.max_requests:
                    self._sent.append(now)
                    return waited
                wait = self._sent[0] + self.window_s - now
            if waited + wait > max_wait_s:
                return None
            time.sleep(wait)
            waited += wait

    def seconds_until_free(self) -> float:
        """How long until a slot frees up (0 when one is free now)."""
        with self._lock:
            now = time.monotonic()
            while self._sent and self._sent[0] <= now - self.window_s:
                self._sent.popleft()
            if len(self._sent) < self.max_requests:
                return 0.0
            return self._sent[0] + self.window_s - now


_shared: RateLimiter | None = None
_shared_lock = threading.Lock()


def shared_limiter(max_requests: int) -> RateLimiter:
    """The container's limiter: every invocation it serves shares one budget.

    A new limit (configuration changed) starts a fresh window.
    """
    global _shared  # noqa: PLW0603 - per-container state is the point
    with _shared_lock:
        if _shared is None or _shared.max_requests != max_requests:
            _shared = RateLimiter(max_requests)
        return _shared
