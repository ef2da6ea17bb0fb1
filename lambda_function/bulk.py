"""Syncing many keys: a list of names, a prefix, or the whole namespace.

Reads are batched: key listings of 1,000 names a page, values by bulk get, 100 a
call, and the stored content hashes by one DynamoDB read per batch (a Query over
the page's key range, or BatchGetItem for named keys). Unchanged records are
not written; new and changed ones get the same conditional ``UpdateItem`` as a
single-key sync, so an older read never overwrites a newer one.

A run stops starting new pages when the Lambda deadline gets close and returns
``next_cursor``; passing it back continues where the run stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import store
from cloudflare import BULK_GET_MAX, CallStats
from errors import NotFoundError, SyncError, ValidationError
from observability import logger, subsegment
from records import build_record, partition_key, sort_key, utc_timestamp
from sync import CloudflareAccess

if TYPE_CHECKING:
    from cloudflare import KVClient, KVEntry
    from config import Settings
    from deadline import Deadline
    from events import SyncRequest
    from records import Record

# Keys per listing page: Cloudflare's maximum (tests lower it to make pages).
LIST_PAGE_SIZE = 1000
FETCH_CONCURRENCY = 4
WRITE_CONCURRENCY = 8
MAX_FAILURES_REPORTED = 50
# A page is only started when this much time, or 1.5 times the slowest page so
# far, is left before the deadline's safety margin.
MIN_PAGE_SECONDS = 2.0
SECONDS_PER_DAY = 86_400
# Every sort key of a namespace starts with "KEY#"; "KEY$" sorts right after them.
_ALL_KEYS_HIGH = "KEY$"


@dataclass
class BulkStats:
    """What a multi-key run did, for the response and the metrics."""

    calls: CallStats = field(default_factory=CallStats)
    reads: store.ReadCounter = field(default_factory=store.ReadCounter)
    keys_listed: int = 0
    keys_fetched: int = 0
    records_written: int = 0
    records_unchanged: int = 0
    records_deleted: int = 0
    records_failed: int = 0
    records_superseded: int = 0
    dynamodb_writes: int = 0
    value_bytes: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def fail(self, key: str, error: SyncError) -> None:
        """Count a key that could not be synced; report the first few."""
        self.records_failed += 1
        if len(self.failures) < MAX_FAILURES_REPORTED:
            self.failures.append({"key": key, "type": error.type, "message": error.message})


@dataclass(frozen=True)
class BulkResult:
    """Outcome of a run: ``complete`` or a ``next_cursor`` to continue, or an error."""

    stats: BulkStats
    next_cursor: str | None
    complete: bool
    error: SyncError | None = None


@dataclass(frozen=True)
class _Position:
    """Where a run stands: the listing cursor and last key, or the name offset."""

    cf_cursor: str | None = None
    after: str | None = None
    offset: int = 0


def sync_many(
    request: SyncRequest, settings: Settings, deadline: Deadline, stats: BulkStats
) -> BulkResult:
    """Sync the keys a bulk request selects, page by page, until done or near the deadline.

    Failures of single keys are counted and listed in ``stats``; a failure that
    stops the run (auth, configuration, Cloudflare down) is returned as
    ``error`` together with the cursor of the last completed page.

    Raises
    ------
    ValidationError
        The cursor is malformed or belongs to another selector.
    """
    fingerprint = _fingerprint(request)
    position = _decode_cursor(request.cursor, fingerprint) if request.cursor else _Position()
    run = _Run(settings, deadline, stats, request.wants_delete_missing(settings.delete_missing))
    try:
        run.access = CloudflareAccess(settings, deadline, stats.calls)
    except SyncError as exc:
        return BulkResult(stats, request.cursor, complete=False, error=exc)

    slowest = 0.0
    while True:
        if deadline.budget() < max(MIN_PAGE_SECONDS, 1.5 * slowest):
            cursor = _encode_cursor(position, fingerprint)
            logger.info("Stopping before the deadline", extra={"next_cursor": cursor})
            return BulkResult(stats, cursor, complete=False)
        started = time.monotonic()
        try:
            if request.key_names is not None:
                position, done = run.names_page(request.key_names, position)
            else:
                position, done = run.listing_page(request.prefix or "", position)
        except SyncError as exc:
            resume = (
                _encode_cursor(position, fingerprint) if position != _Position() else request.cursor
            )
            return BulkResult(stats, resume, complete=False, error=exc)
        slowest = max(slowest, time.monotonic() - started)
        if done:
            return BulkResult(stats, None, complete=True)


class _Run:
    """One invocation's pass over pages; owns the thread pools' work."""

    access: CloudflareAccess

    def __init__(
        self, settings: Settings, deadline: Deadline, stats: BulkStats, delete_missing: bool
    ) -> None:
        self.settings = settings
        self.deadline = deadline
        self.stats = stats
        self.delete_missing = delete_missing

    def names_page(self, names: tuple[str, ...], position: _Position) -> tuple[_Position, bool]:
        """Sync the next 100 named keys."""
        chunk = list(names[position.offset : position.offset + BULK_GET_MAX])
        if not chunk:
            return position, True
        looked_at = utc_timestamp(datetime.now(UTC))
        entries = self._fetch(chunk)
        pk = partition_key(self.access.creds.namespace_id)
        with subsegment("dynamodb.read"):
            stored = store.read_states(
                self.settings.table_name, pk, [sort_key(k) for k in chunk], self.stats.reads
            )
        self._apply(chunk, entries, stored, looked_at, gone=[], named=True)
        offset = position.offset + len(chunk)
        return _Position(offset=offset), offset >= len(names)

    def listing_page(self, prefix: str, position: _Position) -> tuple[_Position, bool]:
        """List one page of keys under ``prefix`` and sync them.

        A page of the (sorted) listing is a complete view of its key range, so
        records stored in that range whose keys were not listed are gone from
        KV; only they may be deleted, never on a listing that failed part-way.
        """
        looked_at = utc_timestamp(datetime.now(UTC))
        with subsegment("cloudflare.list"):
            page = self.access.call(
                lambda client: client.list_keys(prefix, position.cf_cursor, LIST_PAGE_SIZE)
            )
        self.stats.keys_listed += len(page.names)
        entries: dict[str, KVEntry | SyncError | None] = {}
        if page.names:
            entries = self._fetch(page.names)
        done = page.cursor is None
        low = sort_key(position.after) if position.after is not None else sort_key(prefix)
        if done:
            end = _prefix_end(prefix)
            high = sort_key(end) if end is not None else _ALL_KEYS_HIGH
        else:
            high = sort_key(page.names[-1]) if page.names else low
        pk = partition_key(self.access.creds.namespace_id)
        with subsegment("dynamodb.read"):
            stored = store.query_states(self.settings.table_name, pk, low, high, self.stats.reads)
        listed = {sort_key(name) for name in page.names}
        gone = [
            sk
            for sk in stored
            if sk not in listed
            and sk[len("KEY#") :].startswith(prefix)
            and (position.after is None or sk > sort_key(position.after))
        ]
        self._apply(page.names, entries, stored, looked_at, gone)
        after = page.names[-1] if page.names else position.after
        return _Position(cf_cursor=page.cursor, after=after), done

    def _fetch(self, keys: list[str]) -> dict[str, KVEntry | SyncError | None]:
        chunks = [keys[i : i + BULK_GET_MAX] for i in range(0, len(keys), BULK_GET_MAX)]

        def fetch_all(client: KVClient) -> dict[str, KVEntry | SyncError | None]:
            merged: dict[str, KVEntry | SyncError | None] = {}
            with ThreadPoolExecutor(max_workers=min(FETCH_CONCURRENCY, len(chunks))) as pool:
                for part in pool.map(client.get_entries, chunks):
                    merged.update(part)
            return merged

        with subsegment("cloudflare.fetch"):
            entries = self.access.call(fetch_all)
        self.stats.keys_fetched += sum(1 for e in entries.values() if e is not None)
        return entries

    def _apply(
        self,
        keys: list[str],
        entries: dict[str, KVEntry | SyncError | None],
        stored: dict[str, store.StoredState],
        looked_at: str,
        gone: list[str],
        *,
        named: bool = False,
    ) -> None:
        """Decide per key: skip, refresh, write, delete or fail; then do the writes.

        A named key that does not exist is deleted with ``delete_missing`` and
        reported as ``NOT_FOUND`` otherwise; a listed key that vanished before
        it could be read is only deleted (it was not asked for by name).
        """
        creds = self.access.creds
        synced = datetime.now(UTC)
        writes: list[tuple[Record, store.StoredState | None]] = []
        refreshes: list[Record] = []
        deletes = list(gone) if self.delete_missing else []
        for key in keys:
            entry = entries.get(key)
            if isinstance(entry, SyncError):
                self.stats.fail(key, entry)
                continue
            if entry is None:
                if self.delete_missing and sort_key(key) in stored:
                    deletes.append(sort_key(key))
                elif named and not self.delete_missing:
                    self.stats.fail(key, NotFoundError(f"Key '{key}' does not exist in KV"))
                continue
            try:
                record = build_record(
                    entry,
                    namespace_id=creds.namespace_id,
                    namespace_name=creds.namespace_name,
                    synced=synced,
                    ttl_days=self.settings.record_ttl_days,
                )
            except SyncError as exc:
                self.stats.fail(key, exc)
                continue
            self.stats.value_bytes += record.size_bytes
            state = stored.get(record.sk)
            if state is None or state.content_sha256 != record.content_sha256:
                writes.append((record, state))
            elif self._ttl_due(state, synced):
                refreshes.append(record)
            else:
                self.stats.records_unchanged += 1
        self._write(writes, refreshes, deletes, looked_at)

    def _ttl_due(self, state: store.StoredState, now: datetime) -> bool:
        """An unchanged record needs its ``ttl`` pushed out within half the TTL."""
        days = self.settings.record_ttl_days
        if days == 0 or state.ttl is None:
            return False
        return state.ttl - now.timestamp() < days * SECONDS_PER_DAY / 2

    def _write(
        self,
        writes: list[tuple[Record, store.StoredState | None]],
        refreshes: list[Record],
        deletes: list[str],
        looked_at: str,
    ) -> None:
        table = self.settings.table_name
        pk = partition_key(self.access.creds.namespace_id)
        jobs: list[tuple[str, str, Any]] = (
            [("write", r.attributes["key"], (r, seen)) for r, seen in writes]
            + [("refresh", r.attributes["key"], r) for r in refreshes]
            + [("delete", sk[len("KEY#") :], sk) for sk in deletes]
        )
        if not jobs:
            return

        def run(job: tuple[str, str, Any]) -> tuple[str, str, bool | SyncError]:
            kind, key, target = job
            try:
                if kind == "write":
                    return kind, key, store.write_full(table, *target)
                if kind == "refresh":
                    return kind, key, store.refresh(table, target)
                return kind, key, store.delete_if_older(table, pk, target, looked_at)
            except SyncError as exc:
                return kind, key, exc

        with (
            subsegment("dynamodb.write"),
            ThreadPoolExecutor(max_workers=min(WRITE_CONCURRENCY, len(jobs))) as pool,
        ):
            results = list(pool.map(run, jobs))
        for kind, key, result in results:
            self.stats.dynamodb_writes += 1
            if isinstance(result, SyncError):
                self.stats.fail(key, result)
            elif kind == "delete":
                self.stats.records_deleted += int(result)
            elif not result:
                self.stats.records_superseded += 1
            elif kind == "write":
                self.stats.records_written += 1
            else:
                self.stats.records_unchanged += 1


def _prefix_end(prefix: str) -> str | None:
    """The smallest string sorting after every string that starts with ``prefix``.

    ``None`` when there is none (the prefix is all U+10FFFF): no upper bound.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def _fingerprint(request: SyncRequest) -> str:
    """Ties a cursor to the selector it was issued for."""
    canonical = json.dumps(request.selector(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _encode_cursor(position: _Position, fingerprint: str) -> str:
    payload = {"v": 1, "s": fingerprint, "c": position.cf_cursor, "a": position.after}
    if position.offset:
        payload["o"] = position.offset
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> _Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or payload.get("v") != 1:
            raise ValueError("unknown cursor version")
        offset = payload.get("o", 0)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError("cursor offset must be a non-negative integer")
        position = _Position(
            cf_cursor=_optional_str(payload.get("c")),
            after=_optional_str(payload.get("a")),
            offset=offset,
        )
    except (ValueError, TypeError, RecursionError):
        raise ValidationError("cursor is not a next_cursor this function issued") from None
    if payload.get("s") != fingerprint:
        raise ValidationError("cursor belongs to a different key_names, prefix or all selector")
    return position


def _optional_str(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError("cursor field must be a string")
