"""Syncing one KV key into DynamoDB: credentials, fetch, record, write."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import credentials
from cloudflare import CallStats, KVClient
from errors import AuthError
from observability import annotate, logger, subsegment
from records import build_record
from store import write_record

if TYPE_CHECKING:
    from cloudflare import KVEntry
    from config import Settings
    from credentials import CloudflareCredentials
    from deadline import Deadline
    from records import Record
    from store import WriteOutcome


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


def sync_key(key_name: str, settings: Settings, deadline: Deadline, stats: SyncStats) -> SyncResult:
    """Copy one KV key into its DynamoDB record.

    Raises
    ------
    SyncError
        Any failure, typed (see ``errors``); nothing is written on failure.
    """
    stats.records_processed += 1
    with subsegment("secrets.read"):
        creds = credentials.load_credentials(settings)
    annotate(namespace_id=creds.namespace_id)
    logger.append_keys(namespace_id=creds.namespace_id)

    try:
        entry = _fetch(key_name, creds, settings, deadline, stats)
    except AuthError:
        # The token may have been rotated since we cached it: re-read once.
        logger.warning("Cloudflare rejected the token; re-reading the secret once")
        with subsegment("secrets.read"):
            creds = credentials.load_credentials(settings, force_fetch=True)
        entry = _fetch(key_name, creds, settings, deadline, stats)

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
        outcome = write_record(settings.table_name, record)
    stats.dynamodb_writes += outcome.writes
    if not outcome.superseded:
        stats.records_stored += 1
    return SyncResult(key_name=key_name, record=record, outcome=outcome)


def _fetch(
    key_name: str,
    creds: CloudflareCredentials,
    settings: Settings,
    deadline: Deadline,
    stats: SyncStats,
) -> KVEntry:
    client = KVClient(
        base_url=settings.api_base_url,
        api_token=creds.api_token,
        account_id=creds.account_id,
        namespace_id=creds.namespace_id,
        timeout_s=settings.api_timeout_seconds,
        max_attempts=settings.retry_max_attempts,
        deadline=deadline,
        stats=stats.calls,
    )
    with subsegment("cloudflare.fetch", key_name=key_name, namespace_id=creds.namespace_id):
        return client.get_entry(key_name)
