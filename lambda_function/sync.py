"""Syncing one KV key into DynamoDB: credentials, fetch, record, write."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import credentials
import ratelimit
import store
from cloudflare import CallStats, KVClient
from errors import AuthError, NotFoundError
from observability import annotate, logger, subsegment
from records import build_record, partition_key, sort_key, utc_timestamp

if TYPE_CHECKING:
    from collections.abc import Callable

    from config import Settings
    from credentials import CloudflareCredentials
    from deadline import Deadline
    from records import Record
    from store import WriteOutcome

T = TypeVar("T")


@dataclass
class SyncStats:
    """Counters for the response's ``statistics`` and the metrics."""

    calls: CallStats = field(default_factory=CallStats)
    dynamodb_writes: int = 0
    records_processed: int = 0
    records_stored: int = 0
    records_failed: int = 0
    value_bytes: int = 0


@dataclass(frozen=True)
class SyncResult:
    """What syncing one key did."""

    key_name: str
    record: Record
    outcome: WriteOutcome


class CloudflareAccess:
    """A KV client for this invocation, re-reading the secret once on 401/403.

    A rotated token is picked up without waiting for the secret cache to
    expire: the first rejection re-reads the secret (bypassing the cache) and
    repeats the operation once; a second rejection is an ``AUTH_ERROR``.
    """

    def __init__(self, settings: Settings, deadline: Deadline, calls: CallStats) -> None:
        self._settings = settings
        self._deadline = deadline
        self._calls = calls
        self._lock = threading.Lock()
        self._reread = False
        with subsegment("secrets.read"):
            self.creds = credentials.load_credentials(settings)
        self.client = self._client(self.creds)
        annotate(namespace_id=self.creds.namespace_id)
        logger.append_keys(namespace_id=self.creds.namespace_id)

    def call(self, operation: Callable[[KVClient], T]) -> T:
        """Run ``operation`` with the client, once more after a token re-read."""
        client = self.client
        try:
            return operation(client)
        except AuthError:
            with self._lock:
                if self._reread:
                    raise
                self._reread = True
                logger.warning("Cloudflare rejected the token; re-reading the secret once")
                with subsegment("secrets.read"):
                    self.creds = credentials.load_credentials(self._settings, force_fetch=True)
                self.client = self._client(self.creds)
            return operation(self.client)

    def _client(self, creds: CloudflareCredentials) -> KVClient:
        return KVClient(
            base_url=self._settings.api_base_url,
            api_token=creds.api_token,
            account_id=creds.account_id,
            namespace_id=creds.namespace_id,
            timeout_s=self._settings.api_timeout_seconds,
            max_attempts=self._settings.retry_max_attempts,
            deadline=self._deadline,
            stats=self._calls,
            limiter=ratelimit.shared_limiter(self._settings.cloudflare_requests_per_5_minutes),
        )


def sync_key(
    key_name: str,
    settings: Settings,
    deadline: Deadline,
    stats: SyncStats,
    *,
    delete_missing: bool = False,
) -> SyncResult:
    """Copy one KV key into its DynamoDB record.

    Raises
    ------
    NotFoundError
        The key does not exist; with ``delete_missing`` its record is deleted.
    SyncError
        Any other failure, typed (see ``errors``); nothing is written on failure.
    """
    stats.records_processed += 1
    access = CloudflareAccess(settings, deadline, stats.calls)
    creds = access.creds
    looked_at = utc_timestamp(datetime.now(UTC))
    try:
        with subsegment("cloudflare.fetch", key_name=key_name, namespace_id=creds.namespace_id):
            entry = access.call(lambda client: client.get_entry(key_name))
    except NotFoundError as exc:
        if not delete_missing:
            raise
        with subsegment("dynamodb.delete", key_name=key_name):
            deleted = store.delete_if_older(
                settings.table_name,
                partition_key(access.creds.namespace_id),
                sort_key(key_name),
                looked_at,
            )
        stats.dynamodb_writes += 1
        suffix = "; its DynamoDB record was deleted" if deleted else "; no record to delete"
        raise NotFoundError(exc.message + suffix) from None

    creds = access.creds
    synced = datetime.now(UTC)
    record = build_record(
        entry,
        namespace_id=creds.namespace_id,
        namespace_name=creds.namespace_name,
        synced=synced,
        ttl_days=settings.record_ttl_days,
    )
    stats.value_bytes += record.size_bytes
    logger.info(
        "Fetched KV value",
        extra={
            "size_bytes": record.size_bytes,
            "value_sha256": record.attributes["value_sha256"],
            "value_type": record.value_type,
        },
    )
    with subsegment("dynamodb.write", key_name=key_name):
        outcome = store.write_record(settings.table_name, record)
    stats.dynamodb_writes += outcome.writes
    if not outcome.superseded:
        stats.records_stored += 1
    return SyncResult(key_name=key_name, record=record, outcome=outcome)
