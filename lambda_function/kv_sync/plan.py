"""Deciding, per key, what a sync does: the engine's one write policy.

A record is written when it is new or its content (value, metadata and
expiration, as ``content_sha256``) differs from the stored one; an unchanged
record is not written at all, except to extend its ``ttl`` once it is within
half of ``RECORD_TTL_DAYS`` of expiring. A record already stored from a newer
read is left alone (superseded). A key gone from KV has its record deleted with
``delete_missing``; a named key gone from KV is otherwise a ``NOT_FOUND``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kv_sync import records
from kv_sync.errors import NotFoundError, SyncError
from kv_sync.model import Action, KeyOutcome

if TYPE_CHECKING:
    from datetime import datetime

    from kv_sync.model import KVEntry, Record, StoredState

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Job:
    """A write a key needs: ``action`` is what it did once it lands."""

    action: Action  # WRITTEN (new or changed), UNCHANGED (ttl extended) or DELETED
    key: str
    record: Record | None = None
    seen: StoredState | None = None  # the version read before, if any


@dataclass(frozen=True)
class Planner:
    """The policy for one run's keys."""

    namespace_id: str
    namespace_name: str
    ttl_days: int
    delete_missing: bool
    named: bool  # the keys were asked for by name, not listed

    def decide(
        self, key: str, entry: KVEntry | SyncError | None, state: StoredState | None, now: datetime
    ) -> KeyOutcome | Job:
        """``key``'s outcome when it needs no write, else the write it needs.

        ``entry`` is what Cloudflare returned (``None``: not in KV), ``state``
        the stored record's version (``None``: no record), ``now`` the read's time.
        """
        if isinstance(entry, SyncError):
            return KeyOutcome(key, Action.FAILED, error=entry)
        if entry is None:
            return self._gone(key, state)
        try:
            record = records.build_record(
                entry,
                namespace_id=self.namespace_id,
                namespace_name=self.namespace_name,
                synced=now,
                ttl_days=self.ttl_days,
            )
        except SyncError as exc:
            return KeyOutcome(key, Action.FAILED, error=exc)
        return self._compare(key, record, state, now)

    def _compare(
        self, key: str, record: Record, state: StoredState | None, now: datetime
    ) -> KeyOutcome | Job:
        if state is None or state.content_sha256 != record.content_sha256:
            if state is not None and (state.synced_at or "") >= record.synced_at:
                return KeyOutcome(key, Action.SUPERSEDED, record.value_type, record.size_bytes)
            return Job(Action.WRITTEN, key, record, state)
        if self._ttl_due(record, state, now):
            return Job(Action.UNCHANGED, key, record, state)
        return KeyOutcome(key, Action.UNCHANGED, record.value_type, record.size_bytes)

    def _gone(self, key: str, state: StoredState | None) -> KeyOutcome | Job:
        if self.delete_missing and state is not None:
            return Job(Action.DELETED, key)
        if self.named and not self.delete_missing:
            missing = NotFoundError(f"Key '{key}' does not exist in the KV namespace")
            return KeyOutcome(key, Action.FAILED, error=missing)
        return KeyOutcome(key, Action.MISSING)

    def _ttl_due(self, record: Record, state: StoredState, now: datetime) -> bool:
        if record.ttl == state.ttl:
            return False
        if record.ttl is None or state.ttl is None or "expiration" in record.attributes:
            return True  # the TTL policy changed; with an expiration, ttl is the expiration
        return state.ttl - now.timestamp() < self.ttl_days * SECONDS_PER_DAY / 2
