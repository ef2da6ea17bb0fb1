"""One page of a run: fetch its entries, read its stored versions, decide and write.

A page is up to 100 named keys, or one page of the key listing. Records of keys
gone from KV are not deleted here: they are the page's ``gone``, which the engine
deletes when the whole run is complete (behind the deletion guard).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kv_sync import cursor, records, store, tracing
from kv_sync.errors import SyncError
from kv_sync.model import Action, KeyOutcome, KVEntry, utc_timestamp
from kv_sync.plan import Job, Planner

if TYPE_CHECKING:
    from collections.abc import Callable

    from kv_sync.cursor import Position
    from kv_sync.model import StoredState, SyncRequest, SyncStats
    from kv_sync.settings import Settings
    from kv_sync.source import CloudflareSource, Fetched

# Keys per listing page: Cloudflare's maximum (tests lower it to make pages).
LIST_PAGE_SIZE = 1000
NAMES_PAGE_SIZE = store.BATCH_GET_MAX
WRITE_CONCURRENCY = 8
# Every sort key of a namespace's records starts with "KEY#"; "KEY$" sorts right after them.
_ALL_KEYS_HIGH = "KEY$"


@dataclass
class Page:
    """What a page did beyond the counters: where the run stands, and what it found."""

    position: Position
    done: bool
    listed: int = 0  # keys listed, or named keys found in KV
    stored: int = 0  # records stored in the page's range, or for its names
    gone: dict[str, str] = field(default_factory=dict)  # sort key -> when seen missing


class Pages:
    """One invocation's pages of a selection; ``outcomes`` holds each named key's."""

    def __init__(
        self,
        request: SyncRequest,
        settings: Settings,
        namespace: CloudflareSource,
        stats: SyncStats,
    ) -> None:
        self.request, self.settings, self.namespace, self.stats = (
            request,
            settings,
            namespace,
            stats,
        )
        self.table = settings.table_name
        self.pk = records.partition_key(namespace.namespace_id)
        self.planner = Planner(
            namespace_id=namespace.namespace_id,
            namespace_name=namespace.namespace_name,
            ttl_days=settings.record_ttl_days,
            delete_missing=request.wants_delete_missing(settings.delete_missing),
            named=request.names is not None,
        )
        self.outcomes: list[KeyOutcome] = []

    def next(self, position: Position) -> Page:
        """Sync the page at ``position``."""
        names = self.request.names
        looked_at = utc_timestamp(datetime.now(UTC))
        if names is not None:
            chunk = list(names[position.offset : position.offset + NAMES_PAGE_SIZE])
            offset = position.offset + len(chunk)
            page = Page(cursor.Position(offset=offset), done=offset >= len(names))
            if chunk:  # none: a cursor at (or past) the end
                entries = self.namespace.fetch(chunk)
                stored = self._read(lambda: store.read_states(self.table, self.pk, _sks(chunk)))
                page.listed = sum(isinstance(entries.get(key), KVEntry) for key in chunk)
                page.stored = len(stored)
                self._settle(page, chunk, entries, stored, looked_at)
            return page

        prefix = self.request.prefix or ""
        listing = self.namespace.list_page(prefix, position.cf_cursor, LIST_PAGE_SIZE)
        self.stats.keys_listed += len(listing.names)
        entries = self.namespace.fetch(listing.names) if listing.names else {}
        # A page of the sorted listing is a complete view of its key range: records
        # stored in that range whose keys were not listed are gone from KV.
        low = records.sort_key(position.after if position.after is not None else prefix)
        if listing.cursor is None:
            end = _prefix_end(prefix)
            high = records.sort_key(end) if end is not None else _ALL_KEYS_HIGH
        else:
            high = records.sort_key(listing.names[-1]) if listing.names else low
        stored = self._read(lambda: store.query_states(self.table, self.pk, low, high))
        after = listing.names[-1] if listing.names else position.after
        page = Page(cursor.Position(listing.cursor, after), done=listing.cursor is None)
        # The range's records under the prefix (BETWEEN takes in both ends: the previous
        # page's last key, and the first string past the prefix), are this page's.
        in_range = [
            sk
            for sk in stored
            if sk.removeprefix(records.KEY_PREFIX).startswith(prefix)
            and (position.after is None or sk > low)
        ]
        page.listed, page.stored = len(listing.names), len(in_range)
        self._settle(page, listing.names, entries, stored, looked_at)
        listed = set(_sks(listing.names))
        for sk in in_range:
            if sk not in listed and self.planner.delete_missing:
                page.gone[sk] = looked_at
        return page

    def _read(
        self, read: Callable[[], tuple[dict[str, StoredState], int]]
    ) -> dict[str, StoredState]:
        stored, calls = read()  # traced by the SDK as the dynamodb call itself
        self.stats.dynamodb_reads += calls
        return stored

    def _settle(
        self,
        page: Page,
        keys: list[str],
        entries: Fetched,
        stored: dict[str, StoredState],
        looked_at: str,
    ) -> None:
        """Decide per key (write, extend the ttl, skip, delete later or fail), then write."""
        now = datetime.now(UTC)
        outcomes: list[KeyOutcome] = []
        jobs: list[Job] = []
        for key in keys:
            entry = entries.get(key)
            decided = self.planner.decide(key, entry, stored.get(records.sort_key(key)), now)
            if isinstance(decided, KeyOutcome):
                outcomes.append(decided)
            elif decided.action is Action.DELETED:
                page.gone[records.sort_key(key)] = looked_at
            else:
                jobs.append(decided)
        self.stats.keys_fetched += sum(isinstance(entries.get(key), KVEntry) for key in keys)
        outcomes += self._write(jobs, single_key=keys[0] if len(keys) == 1 else None)
        # A write that may succeed when retried (throttling, the deadline) fails the whole
        # page, so that the cursor stays before it; writes are conditional, so redoing
        # the page is safe. Other failures (an item too large) concern their key alone.
        retryable = [o.error for o in outcomes if o.error is not None and o.error.is_retryable]
        if retryable:
            raise retryable[0]
        self.record(outcomes)

    def record(self, outcomes: list[KeyOutcome]) -> None:
        """Count keys' outcomes, and keep those of named keys."""
        for outcome in outcomes:
            self.stats.count(outcome)
        if self.planner.named:
            self.outcomes += outcomes

    def delete(self, gone: dict[str, str]) -> list[KeyOutcome]:
        """Delete the records of keys gone from KV, unless re-synced since seen missing."""
        jobs = [Job(Action.DELETED, sk.removeprefix(records.KEY_PREFIX)) for sk in sorted(gone)]
        return self._write(jobs, single_key=None, seen_missing=gone)

    def _write(
        self, jobs: list[Job], single_key: str | None, seen_missing: dict[str, str] | None = None
    ) -> list[KeyOutcome]:
        """Run writes 8 at a time; each lands, or loses to a newer read. A dry run only counts."""
        if not jobs:
            return []
        if self.request.dry_run:  # what the real run would do, had every write landed
            return [_outcome(job, landed=True) for job in jobs]
        self.stats.dynamodb_writes += len(jobs)

        def write(job: Job) -> KeyOutcome:
            record, sk = job.record, records.sort_key(job.key)
            try:
                if record is None:
                    missing_at = (seen_missing or {})[sk]
                    landed = store.delete_if_older(self.table, self.pk, sk, missing_at)
                elif job.action is Action.WRITTEN:
                    landed = store.write(self.table, record, job.seen)
                else:
                    landed = store.refresh(self.table, record)
            except SyncError as exc:
                return KeyOutcome(job.key, Action.FAILED, error=exc)
            return _outcome(job, landed=landed)

        annotations = {"namespace_id": self.namespace.namespace_id}
        if single_key is not None:
            annotations["key_name"] = single_key
        name = "dynamodb.write" if seen_missing is None else "dynamodb.delete"
        with tracing.subsegment(name, **annotations):
            if len(jobs) == 1:
                return [write(jobs[0])]
            with ThreadPoolExecutor(max_workers=min(WRITE_CONCURRENCY, len(jobs))) as pool:
                return list(pool.map(tracing.carry(write), jobs))


def _outcome(job: Job, *, landed: bool) -> KeyOutcome:
    """A write's outcome; one that did not land lost to a sync of a newer read."""
    action = job.action if landed else Action.SUPERSEDED
    if job.record is None:
        return KeyOutcome(job.key, action)
    return KeyOutcome(job.key, action, job.record.value_type, job.record.size_bytes)


def _sks(names: list[str]) -> list[str]:
    return [records.sort_key(name) for name in names]


def _prefix_end(prefix: str) -> str | None:
    """The smallest string after every string that starts with ``prefix`` (``None``: none)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None
