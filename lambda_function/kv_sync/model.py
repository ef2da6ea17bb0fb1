"""Plain data types shared by the layers: requests, entries, records, outcomes, statistics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kv_sync.errors import SyncError

# Per-key failures a reply lists; the rest are only counted.
MAX_FAILURES_REPORTED = 50
MAX_SAMPLE = 20  # key names per action a dry run's reply lists


def utc_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with fixed microsecond width, so that strings sort like times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Trigger(StrEnum):
    """How the function was invoked; decides the shape of the reply."""

    DIRECT = "direct"
    FUNCTION_URL = "function_url"
    SCHEDULE = "schedule"


@dataclass(frozen=True)
class SyncRequest:
    """A validated request: exactly one of ``key_name``, ``key_names``, ``prefix``, ``all_keys``.

    ``delete_missing`` is ``None`` when left to the deployment's default;
    ``dry_run`` reads everything and writes nothing; ``force_delete`` overrides the
    deletion guard.
    """

    trigger: Trigger = Trigger.DIRECT
    key_name: str | None = None
    key_names: tuple[str, ...] | None = None
    prefix: str | None = None
    all_keys: bool = False
    cursor: str | None = None
    delete_missing: bool | None = None
    dry_run: bool = False
    force_delete: bool = False

    @property
    def is_bulk(self) -> bool:
        """Whether the reply is the multi-key document (any selector but ``key_name``)."""
        return self.key_name is None

    @property
    def names(self) -> tuple[str, ...] | None:
        """The named keys (``key_name`` is a selection of one); ``None`` for listings."""
        return (self.key_name,) if self.key_name is not None else self.key_names

    def wants_delete_missing(self, default: bool) -> bool:
        """``delete_missing`` as asked, else the deployment's default."""
        return default if self.delete_missing is None else self.delete_missing

    def selector(self) -> dict[str, Any]:
        """The selector as an event carries it."""
        if self.key_names is not None:
            return {"key_names": list(self.key_names)}
        if self.prefix is not None:
            return {"prefix": self.prefix}
        return {"all": True} if self.all_keys else {"key_name": self.key_name}


@dataclass(frozen=True)
class KVEntry:
    """One KV key as Cloudflare holds it."""

    key: str
    value: bytes
    metadata: Any
    expiration: int | None


@dataclass(frozen=True)
class KeyPage:
    """One page of a key listing; ``cursor`` is ``None`` on the last page."""

    names: list[str]
    cursor: str | None


@dataclass(frozen=True)
class Record:
    """A DynamoDB record ready to write.

    ``attributes`` holds every attribute but ``pk``, ``sk``, ``content_sha256``,
    ``created_at`` and ``updated_at``, which the store adds.
    """

    pk: str
    sk: str
    attributes: dict[str, Any]
    content_sha256: str
    synced_at: str
    value_type: str
    size_bytes: int
    ttl: int | None


@dataclass(frozen=True)
class StoredState:
    """The version of a stored record, which a fresh record is compared with."""

    content_sha256: str | None
    synced_at: str | None
    ttl: int | None
    created_at: str | None = None


class Action(StrEnum):
    """What a run did with one key."""

    WRITTEN = "written"  # new or changed: the record was (re)written
    UNCHANGED = "unchanged"  # same content: nothing written, or only its ttl extended
    SUPERSEDED = "superseded"  # a sync with a newer read had already stored the key
    DELETED = "deleted"  # gone from KV; its record was deleted
    MISSING = "missing"  # gone from KV; no record deleted
    FAILED = "failed"


@dataclass(frozen=True)
class KeyOutcome:
    """One key's result; ``value_type`` and ``size_bytes`` when its value was read."""

    key: str
    action: Action
    value_type: str | None = None
    size_bytes: int | None = None
    error: SyncError | None = None


@dataclass
class CallStats:
    """Cloudflare calls and retries; worker threads share one (thread-safe)."""

    api_calls: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, api_calls: int = 0, retries: int = 0) -> None:
        """Count calls and retries."""
        with self._lock:
            self.api_calls += api_calls
            self.retries += retries


_COUNTERS = {
    Action.WRITTEN: "records_written",
    Action.UNCHANGED: "records_unchanged",
    Action.SUPERSEDED: "records_superseded",
    Action.DELETED: "records_deleted",
    Action.FAILED: "records_failed",
}


@dataclass
class SyncStats:
    """What a run did: every reply's statistics, the metrics, progress listeners."""

    calls: CallStats = field(default_factory=CallStats)
    keys_listed: int = 0
    keys_fetched: int = 0
    records_written: int = 0
    records_unchanged: int = 0
    records_deleted: int = 0
    records_failed: int = 0
    records_superseded: int = 0
    dynamodb_reads: int = 0
    dynamodb_writes: int = 0  # writes of records
    state_writes: int = 0  # writes of the run's own items (lease, pending deletions)
    value_bytes: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    sample: dict[str, list[str]] = field(default_factory=dict)  # key names per action

    def count(self, outcome: KeyOutcome) -> None:
        """Add one key's outcome; list the first failures, and a sample of names per action."""
        counter = _COUNTERS.get(outcome.action)
        if counter is not None:
            setattr(self, counter, getattr(self, counter) + 1)
        names = self.sample.setdefault(outcome.action.value, [])
        if len(names) < MAX_SAMPLE:
            names.append(outcome.key)
        self.value_bytes += outcome.size_bytes or 0
        error = outcome.error
        if error is not None and len(self.failures) < MAX_FAILURES_REPORTED:
            self.failures.append({"key": outcome.key, "type": error.type, "message": error.message})


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``complete``, or ``next_cursor`` to continue; ``error`` if it stopped.

    ``outcomes`` holds each named key's outcome (listed keys are only counted).
    """

    complete: bool
    next_cursor: str | None = None
    error: SyncError | None = None
    outcomes: tuple[KeyOutcome, ...] = ()
    namespace_id: str | None = None
    deletion: dict[str, Any] | None = None  # the deletion guard's figures, once it decided
