"""The source: the KV namespace the credentials name, listed and read in batches.

When Cloudflare rejects the token, the secret is re-read once, bypassing its
cache, and the operation repeated: that is how a rotated token is picked up
without waiting for the cache to expire. A second rejection is ``AUTH_ERROR``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from kv_sync import credentials, ratelimit, tracing
from kv_sync.cloudflare import BULK_GET_MAX, LIST_LIMIT, KVClient
from kv_sync.errors import AuthError
from kv_sync.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from kv_sync.errors import SyncError
    from kv_sync.model import CallStats, KeyPage, KVEntry
    from kv_sync.runtime import Deadline
    from kv_sync.settings import Settings

    Fetched = dict[str, KVEntry | SyncError | None]

T = TypeVar("T")
FETCH_CONCURRENCY = 4  # bulk gets of one page in flight at once, over the one session


class CloudflareSource:
    """One invocation's view of the namespace; every call is counted in ``calls``.

    Raises
    ------
    ConfigurationError
        On creation: the secret cannot be read or is incomplete.
    """

    def __init__(self, settings: Settings, deadline: Deadline, calls: CallStats) -> None:
        self._settings, self._deadline, self._calls = settings, deadline, calls
        self._lock = threading.Lock()
        self._reread = False
        self._creds = credentials.load_credentials(settings)
        self._client = self._new_client()
        self.namespace_id = self._creds.namespace_id
        self.namespace_name = self._creds.namespace_name
        logger.append_keys(namespace_id=self.namespace_id)
        tracing.annotate(namespace_id=self.namespace_id)

    def list_page(self, prefix: str, cursor: str | None, limit: int = LIST_LIMIT) -> KeyPage:
        """One page of key names under ``prefix``; ``cursor`` is Cloudflare's."""
        with tracing.subsegment("cloudflare.list", namespace_id=self.namespace_id):
            return self._call(lambda client: client.list_keys(prefix, cursor, limit))

    def fetch(self, names: list[str]) -> Fetched:
        """Every name's entry (``None``: not in KV; an error: that key failed).

        Raises
        ------
        SyncError
            A failure of the whole read (auth, rate limit, outage).
        """
        chunks = [names[i : i + BULK_GET_MAX] for i in range(0, len(names), BULK_GET_MAX)]

        def fetch_all(client: KVClient) -> Fetched:
            if len(chunks) == 1:
                return client.get_entries(chunks[0])
            fetched: Fetched = {}
            with ThreadPoolExecutor(max_workers=min(FETCH_CONCURRENCY, len(chunks))) as pool:
                for part in pool.map(tracing.carry(client.get_entries), chunks):
                    fetched |= part
            return fetched

        single = {"key_name": names[0]} if len(names) == 1 else {}
        with tracing.subsegment("cloudflare.fetch", namespace_id=self.namespace_id, **single):
            return self._call(fetch_all)

    def _call(self, operation: Callable[[KVClient], T]) -> T:
        client = self._client
        try:
            return operation(client)
        except AuthError:
            with self._lock:
                if self._reread:
                    raise
                self._reread = True
                logger.warning("Cloudflare rejected the token; re-reading the secret once")
                self._creds = credentials.load_credentials(self._settings, force_fetch=True)
                self._client = self._new_client()
            return operation(self._client)

    def _new_client(self) -> KVClient:
        limiter = ratelimit.shared_limiter(self._settings.cloudflare_requests_per_5_minutes)
        return KVClient(self._creds, self._settings, self._deadline, self._calls, limiter)
