"""The sync engine: one pipeline for every selector, one multi-key run per namespace at a time.

names -> bulk fetch -> records -> compare with the stored versions -> write, skip or delete.

A run reads its selection page by page (``pages``); ``plan`` decides per key, and
every write is conditional on the version read, so an older read never
overwrites a record written from a newer one. A multi-key run holds the
namespace's lease (``ledger``) from its first invocation to its last. Records of
keys gone from KV are deleted only when the whole run is complete, no page of
it failed, and the deletion guard agrees. No page after the first starts unless
``MIN_PAGE_SECONDS``, and 1.5 times the slowest page so far, are left: the run
then returns ``next_cursor``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kv_sync import cursor, ledger, source
from kv_sync.errors import ConflictError, DeletionRefusedError, SyncError
from kv_sync.model import Action, KeyOutcome, RunResult, utc_timestamp
from kv_sync.observability import logger
from kv_sync.pages import LIST_PAGE_SIZE, NAMES_PAGE_SIZE, Pages
from kv_sync.records import KEY_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from kv_sync.cursor import Position, RunState
    from kv_sync.model import SyncRequest, SyncStats
    from kv_sync.runtime import Deadline
    from kv_sync.settings import Settings

__all__ = ["LIST_PAGE_SIZE", "MIN_PAGE_SECONDS", "NAMES_PAGE_SIZE", "run"]
MIN_PAGE_SECONDS = 2.0
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
    configuration, an outage, a refused deletion, another run on the namespace)
    is returned as ``error``, with the cursor to resume from.

    Raises
    ------
    ValidationError
        The cursor is malformed or belongs to another request.
    """
    position, state = cursor.decode(request)
    try:
        namespace = source.CloudflareSource(settings, deadline, stats.calls)
    except SyncError as exc:
        return RunResult(complete=False, next_cursor=request.cursor, error=exc)
    return _Run(request, settings, deadline, Pages(request, settings, namespace, stats), state).go(
        position
    )


class _Run:
    """One invocation of a run: its lease, its pages, and how it ends."""

    def __init__(
        self,
        request: SyncRequest,
        settings: Settings,
        deadline: Deadline,
        pages: Pages,
        state: RunState | None,
    ) -> None:
        self.request, self.settings, self.deadline, self.pages = request, settings, deadline, pages
        self.stats, self.table, self.pk = pages.stats, settings.table_name, pages.pk
        self.state = state or cursor.RunState.new(utc_timestamp(datetime.now(UTC)))
        self.lease_s = deadline.remaining()  # a lease lasts as long as an invocation
        self.gone: dict[str, str] = {}  # this invocation's records of keys gone from KV
        self.deletion: dict[str, Any] | None = None

    def go(self, position: Position) -> RunResult:
        slowest = 0.0
        try:
            if self.request.is_bulk:
                self._take_lease()
            while True:
                started = time.monotonic()
                page = self.pages.next(position)
                position, state = page.position, self.state
                self.state = replace(
                    state,
                    listed=state.listed + page.listed,
                    stored=state.stored + page.stored,
                    to_delete=state.to_delete + len(page.gone),
                )
                self.gone |= page.gone
                slowest = max(slowest, time.monotonic() - started)
                for listener in list(_listeners):
                    listener(self.stats)
                if page.done:
                    self._delete_gone()
                    return self._release(self._result(None))
                if self.deadline.budget() < max(MIN_PAGE_SECONDS, 1.5 * slowest):
                    return self._pause(position)
        except ConflictError as exc:
            return RunResult(False, self.request.cursor, exc, namespace_id=self._namespace)
        except DeletionRefusedError as exc:  # every page was synced: nothing left to resume
            return self._release(self._result(None, exc))
        except SyncError as exc:
            # Deletions never follow a failed page: the resumed run deletes nothing.
            self.state = replace(self.state, deletions_off=True)
            return self._release(self._result(position, exc))

    @property
    def _namespace(self) -> str:
        return self.pages.namespace.namespace_id

    def _result(self, position: Position | None, error: SyncError | None = None) -> RunResult:
        """The run's end (``position`` ``None``: complete) or where to continue from."""
        stats, state = self.stats, self.state
        self.state = replace(
            state,
            written=state.written + stats.records_written,
            unchanged=state.unchanged + stats.records_unchanged,
            failed=state.failed + stats.records_failed,
        )
        self._save_sync_state(complete=position is None and error is None, error=error)
        next_cursor = None
        if position is not None:
            moved = position != cursor.START or self.request.cursor is not None
            next_cursor = cursor.encode(position, self.state, self.request) if moved else None
        return RunResult(
            complete=position is None,
            next_cursor=next_cursor,
            error=error,
            outcomes=tuple(self.pages.outcomes),
            namespace_id=self._namespace,
            deletion=self.deletion,
        )

    def _save_sync_state(self, *, complete: bool, error: SyncError | None) -> None:
        """Record this invocation's end in the selector's sync-state item, for readers."""
        key = ledger.sync_state_key(self.request.selector())
        if key is None or self.request.dry_run:
            return
        state, now = self.state, utc_timestamp(datetime.now(UTC))
        run: dict[str, Any] = {"run_id": state.run_id, "started_at": state.started_at}
        run |= {"finished_at": now, "complete": complete, "listed": state.listed}
        run |= {"written": state.written, "unchanged": state.unchanged}
        run |= {"deleted": self.stats.records_deleted, "failed": state.failed}
        if error is not None:
            run["error_type"] = error.type
        selector = json.dumps(self.request.selector(), ensure_ascii=False)
        try:
            if ledger.save_run(self.table, self.pk, key, selector, run, updated_at=now):
                self.stats.state_writes += 1
        except SyncError as exc:  # readers see an older state; the run itself went well
            logger.warning("Could not record the sync state", extra={"error_type": exc.type})

    def _pause(self, position: Position) -> RunResult:
        """Stop before the deadline: keep what is to delete, hand the lease on."""
        logger.info("Stopping before the deadline")
        if self.gone and not self.request.dry_run:
            parts = ledger.save_pending(
                self.table, self.pk, self.state.run_id, self.gone,
                first_part=self.state.pending, now=time.time(),
            )  # fmt: skip
            self.stats.state_writes += parts
            self.state = replace(self.state, pending=self.state.pending + parts)
        if self.request.is_bulk and not self.request.dry_run:
            ledger.extend_lease(self.table, self.pk, self.state.run_id, time.time() + self.lease_s)
            self.stats.state_writes += 1
        return self._result(position)

    def _take_lease(self) -> None:
        """Hold the namespace's lease, or fail fast with CONFLICT (a dry run only checks)."""
        now, state = time.time(), self.state
        lease = {"run_id": state.run_id, "started_at": state.started_at}
        lease["selector"] = json.dumps(self.request.selector())[:1000]
        if self.request.dry_run:
            holder = ledger.lease_holder(self.table, self.pk)
            busy = holder and holder["expires_at"] >= now and holder["run_id"] != state.run_id
            holder = holder if busy else None
        else:
            holder = ledger.acquire_lease(self.table, self.pk, lease, now, now + self.lease_s)
            self.stats.state_writes += 1
        if holder is not None:
            wait = max(float(holder.get("expires_at", now)) - now, 1.0)
            raise ConflictError(
                f"Another multi-key run has been syncing namespace {self._namespace} since "
                f"{holder.get('started_at', 'an unknown time')} (run {holder.get('run_id')}, "
                f"{holder.get('selector')}); only one runs at a time, so retry after it "
                f"ends or its lease expires in {wait:.0f} s",
                retry_after=wait,
            )

    def _release(self, result: RunResult) -> RunResult:
        """Give the lease up as the run ends (its state recorded), and return ``result``."""
        if not self.request.is_bulk or self.request.dry_run:
            return result
        try:
            ledger.release_lease(self.table, self.pk, self.state.run_id)
            self.stats.state_writes += 1
        except SyncError as exc:  # it expires by itself; do not hide why the run ended
            logger.warning("Could not release the lease", extra={"error_type": exc.type})
        return result

    def _delete_gone(self) -> None:
        """Delete the run's records of keys gone from KV, if the deletion guard agrees."""
        state, request = self.state, self.request
        if not self.pages.planner.delete_missing:
            return
        percent = self.settings.max_delete_percent
        refusal = _refusal(state, percent, listing=request.names is None)
        self.deletion = {
            "to_delete": state.to_delete,
            "stored": state.stored,
            "max_delete_percent": percent,
            "force_delete": request.force_delete,
            "refused": refusal,
            "skipped": "a page of this run failed" if state.deletions_off else None,
        }
        kept = [KeyOutcome(sk.removeprefix(KEY_PREFIX), Action.MISSING) for sk in self.gone]
        if state.deletions_off or state.to_delete == 0:
            self.pages.record(kept)
            self._drop_pending()  # what earlier invocations kept is not deleted either
            return
        gone = self.gone
        if state.pending:
            gone = ledger.load_pending(self.table, self.pk, state.run_id) | gone
        if refusal is not None and request.force_delete:
            logger.warning("Deletion guard overridden by force_delete", extra={"refused": refusal})
        elif refusal is not None:
            self._drop_pending()
            if not request.dry_run:
                raise DeletionRefusedError(
                    f"Refused to delete: {refusal}. Nothing was deleted. Check that the secret "
                    "names the right namespace and that these keys really left KV; to delete "
                    'anyway, run the same selector with "force_delete": true'
                )
            self.pages.record(kept)  # a dry run reports the refusal instead of failing
            return
        self.pages.record(self.pages.delete(gone))
        if request.dry_run:  # earlier invocations of a dry run kept nothing: count their finds
            self.stats.records_deleted += state.to_delete - len(gone)
        self._drop_pending()

    def _drop_pending(self) -> None:
        if self.state.pending and not self.request.dry_run:
            ledger.drop_pending(self.table, self.pk, self.state.run_id, self.state.pending)
            self.stats.state_writes += self.state.pending


def _refusal(state: RunState, percent: int, *, listing: bool) -> str | None:
    """Why the deletion guard refuses the run's deletions, if it does (``listing``: the
    run listed its keys; named keys are held to ``percent`` alone)."""
    if state.to_delete == 0:
        return None
    if listing and state.listed == 0:
        found = "the selection's complete listing found no keys"
        return f"{found}, while {state.stored} records are stored"
    if state.to_delete * 100 > percent * state.stored:
        share = state.to_delete * 100 / state.stored
        return (
            f"it would delete {state.to_delete} of the selection's {state.stored} stored records "
            f"({share:.1f} %), more than MAX_DELETE_PERCENT ({percent} %)"
        )
    return None
