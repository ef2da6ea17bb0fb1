"""The sync engine: one pipeline for every selector.

names -> bulk fetch -> records -> compare with the stored versions -> write, skip or delete.

A run reads its selection in pages: up to 100 named keys (``key_name`` is a
selection of one), or 1,000 names of the key listing (``prefix``, ``all``).
``plan`` decides per key; every write is conditional on the version read, so an
older read never overwrites a record written from a newer one. No page after
the first starts unless ``MIN_PAGE_SECONDS``, and 1.5 times the slowest page
so far, are left: the run then returns ``next_cursor``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kv_sync import cursor, records, source, store, tracing
from kv_sync.errors import SyncError
from kv_sync.model import Action, KeyOutcome, KVEntry, RunResult, utc_timestamp
from kv_sync.observability import logger
from kv_sync.plan import Job, Planner

if TYPE_CHECKING:
    from collections.abc import Callable

    from kv_sync.cursor import Position
    from kv_sync.model import StoredState, SyncRequest, SyncStats
    from kv_sync.runtime import Deadline
    from kv_sync.settings import Settings
    from kv_sync.source import CloudflareSource, Fetched

# Keys per listing page: Cloudflare's maximum (tests lower it to make pages).
LIST_PAGE_SIZE = 1000
NAMES_PAGE_SIZE = store.BATCH_GET_MAX
WRITE_CONCURRENCY = 8
MIN_PAGE_SECONDS = 2.0
# Every sort key of a namespace starts with "KEY#"; "KEY$" sorts right after them all.
_ALL_KEYS_HIGH = "KEY$"

_listeners: list[Callable[[SyncStats], None]] = []


def add_progress_listener(listener: Callable[[SyncStats], None]) -> None:
    """Call ``listener`` with the run's statistics after every page (the local runner's bar)."""
    _listeners.append(listener)


def remove_progress_listener(listener: Callable[[SyncStats], None]) -> None:
    """Stop calling ``listener``."""
    _listeners.remove(listener)


def run(
    request: SyncRequest, settings: Settings, deadline: Deadline, stats: SyncStats
) -> RunResult:
    """Sync the keys ``request`` selects, page by page, until done or near the deadline.

    Per-key failures are counted in ``stats``; a failure of the whole run (auth,
    configuration, an outage) is returned as ``error`` with the last page's cursor.

    Raises
    ------
    ValidationError
        The cursor is malformed or belongs to another selector.
    """
    position = cursor.decode(request)
    try:
        namespace = source.CloudflareSource(settings, deadline, stats.calls)
    except SyncError as exc:
        return RunResult(complete=False, next_cursor=request.cursor, error=exc)
    sync = _Run(request, settings, namespace, stats)
    slowest = 0.0
    while True:
        started = time.monotonic()
        try:
            position, done = sync.page(position)
        except SyncError as exc:
            return sync.result(position, error=exc)
        slowest = max(slowest, time.monotonic() - started)
        for listener in list(_listeners):
            listener(stats)
        if done:
            return sync.result(None)
        if deadline.budget() < max(MIN_PAGE_SECONDS, 1.5 * slowest):
            logger.info("Stopping before the deadline")
            return sync.result(position)


class _Run:
    """One invocation's pass over the pages of a selection."""

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
        self.pk = records.partition_key(namespace.namespace_id)
        self.planner = Planner(
            namespace_id=namespace.namespace_id,
            namespace_name=namespace.namespace_name,
            ttl_days=settings.record_ttl_days,
            delete_missing=request.wants_delete_missing(settings.delete_missing),
            named=request.names is not None,
        )
        self.outcomes: list[KeyOutcome] = []

    def result(self, position: Position | None, error: SyncError | None = None) -> RunResult:
        """How the run ends: complete (no position), or where to continue from."""
        next_cursor = None
        if position is not None:
            moved = position != cursor.START
            next_cursor = cursor.encode(position, self.request) if moved else self.request.cursor
        return RunResult(
            complete=position is None,
            next_cursor=next_cursor,
            error=error,
            outcomes=tuple(self.outcomes),
            namespace_id=self.namespace.namespace_id,
        )

    def page(self, position: Position) -> tuple[Position, bool]:
        """Sync the next page; returns where the run stands and whether it is done."""
        names = self.request.names
        looked_at = utc_timestamp(datetime.now(UTC))
        if names is not None:
            chunk = list(names[position.offset : position.offset + NAMES_PAGE_SIZE])
            if not chunk:  # a cursor at (or past) the end: nothing left to do
                return position, True
            entries = self.namespace.fetch(chunk)
            stored = self._read(
                lambda: store.read_states(self.settings.table_name, self.pk, _sks(chunk))
            )
            self._settle(chunk, entries, stored, looked_at, gone=[])
            offset = position.offset + len(chunk)
            return cursor.Position(offset=offset), offset >= len(names)

        prefix = self.request.prefix or ""
        page = self.namespace.list_page(prefix, position.cf_cursor, LIST_PAGE_SIZE)
        self.stats.keys_listed += len(page.names)
        entries = self.namespace.fetch(page.names) if page.names else {}
        # A page of the sorted listing is a complete view of its key range: records
        # stored in that range whose keys were not listed are gone from KV.
        low = records.sort_key(position.after if position.after is not None else prefix)
        if page.cursor is None:
            end = _prefix_end(prefix)
            high = records.sort_key(end) if end is not None else _ALL_KEYS_HIGH
        else:
            high = records.sort_key(page.names[-1]) if page.names else low
        stored = self._read(
            lambda: store.query_states(self.settings.table_name, self.pk, low, high)
        )
        listed = set(_sks(page.names))
        gone = [
            sk
            for sk in stored
            if sk not in listed
            and sk.removeprefix(records.KEY_PREFIX).startswith(prefix)
            and (position.after is None or sk > low)
        ]
        self._settle(page.names, entries, stored, looked_at, gone)
        after = page.names[-1] if page.names else position.after
        return cursor.Position(cf_cursor=page.cursor, after=after), page.cursor is None

    def _read(
        self, read: Callable[[], tuple[dict[str, StoredState], int]]
    ) -> dict[str, StoredState]:
        stored, calls = read()  # traced by the SDK as the dynamodb call itself
        self.stats.dynamodb_reads += calls
        return stored

    def _settle(
        self,
        keys: list[str],
        entries: Fetched,
        stored: dict[str, StoredState],
        looked_at: str,
        gone: list[str],
    ) -> None:
        """Decide per key (write, extend the ttl, skip, delete or fail), then write."""
        now = datetime.now(UTC)
        outcomes: list[KeyOutcome] = []
        jobs: list[Job] = []
        for key in keys:
            entry = entries.get(key)
            self.stats.keys_fetched += isinstance(entry, KVEntry)
            decided = self.planner.decide(key, entry, stored.get(records.sort_key(key)), now)
            if isinstance(decided, Job):
                jobs.append(decided)
            else:
                outcomes.append(decided)
        if self.planner.delete_missing:
            jobs += [Job(Action.DELETED, sk.removeprefix(records.KEY_PREFIX)) for sk in gone]
        outcomes += self._write(jobs, looked_at, single_key=keys[0] if len(keys) == 1 else None)
        # A write that may succeed when retried (throttling, the deadline) fails the whole
        # page, so that the cursor stays before it; writes are conditional, so redoing
        # the page is safe. Other failures (an item too large) concern their key alone.
        retryable = [o.error for o in outcomes if o.error is not None and o.error.is_retryable]
        if retryable:
            raise retryable[0]
        for outcome in outcomes:
            self.stats.count(outcome)
        if self.planner.named:
            self.outcomes += outcomes

    def _write(self, jobs: list[Job], looked_at: str, single_key: str | None) -> list[KeyOutcome]:
        """Run a page's writes, 8 at a time; each lands, or loses to a newer read."""
        if not jobs:
            return []
        self.stats.dynamodb_writes += len(jobs)

        def write(job: Job) -> KeyOutcome:
            record = job.record
            try:
                if record is None:
                    sk = records.sort_key(job.key)
                    landed = store.delete_if_older(self.settings.table_name, self.pk, sk, looked_at)
                elif job.action is Action.WRITTEN:
                    landed = store.write(self.settings.table_name, record, job.seen)
                else:
                    landed = store.refresh(self.settings.table_name, record)
            except SyncError as exc:
                return KeyOutcome(job.key, Action.FAILED, error=exc)
            if record is None:  # a lost delete: a sync stored the key after it was seen missing
                return KeyOutcome(job.key, Action.DELETED if landed else Action.SUPERSEDED)
            action = job.action if landed else Action.SUPERSEDED
            return KeyOutcome(job.key, action, record.value_type, record.size_bytes)

        annotations = {"namespace_id": self.namespace.namespace_id}
        if single_key is not None:
            annotations["key_name"] = single_key
        with tracing.subsegment("dynamodb.write", **annotations):
            if len(jobs) == 1:
                return [write(jobs[0])]
            with ThreadPoolExecutor(max_workers=min(WRITE_CONCURRENCY, len(jobs))) as pool:
                return list(pool.map(tracing.carry(write), jobs))


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
