"""A ``KVClient`` of the unit tests' fake account, with its counters and recorded sleeps."""

from __future__ import annotations

from typing import Any

from kv_sync import errors
from kv_sync.cloudflare import KVClient
from kv_sync.credentials import CloudflareCredentials
from kv_sync.model import CallStats, KVEntry
from kv_sync.ratelimit import RateLimiter
from kv_sync.runtime import Deadline
from kv_sync.settings import Settings
from local.lambda_context import LambdaContext
from tests.support.cloudflare import ACCOUNT_ID, CF_BASE, NAMESPACE_ID


class Client:
    """A KVClient with its call counters and recorded sleeps."""

    def __init__(
        self,
        timeout_ms: int | None = 30_000,
        attempts: int = 3,
        timeout_s: float = 30.0,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.slept: list[float] = []
        self.stats = CallStats()
        context: Any = LambdaContext(timeout_ms=timeout_ms) if timeout_ms is not None else None
        creds = CloudflareCredentials(
            api_token="tok-abcdefgh",
            account_id=ACCOUNT_ID,
            namespace_id=NAMESPACE_ID,
            namespace_name="flags",
        )
        settings = Settings(
            table_name="t",
            secret_name="s",
            api_base_url=CF_BASE,
            api_timeout_seconds=timeout_s,
            retry_max_attempts=attempts,
        )
        self.kv = KVClient(
            creds,
            settings,
            Deadline(context),
            self.stats,
            limiter or RateLimiter(10_000),
            sleep=self.slept.append,
        )

    def one(self, key: str) -> KVEntry | errors.SyncError | None:
        """What the client reads of one key."""
        return self.kv.get_entries([key])[key]


def text_entry(client: Client, key: str) -> KVEntry:
    """The entry of a key the test expects to be read."""
    entry = client.one(key)
    assert isinstance(entry, KVEntry), entry
    return entry
