"""Replies: the response documents operators script against, and their HTTP form.

A ``key_name`` request gets the single-key document (the seed format), every
other selector the multi-key document; both keep ``statistics`` on failure too.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kv_sync.errors import NotFoundError
from kv_sync.model import Action, utc_timestamp

if TYPE_CHECKING:
    from kv_sync.errors import SyncError
    from kv_sync.model import KeyOutcome, RunResult, SyncRequest, SyncStats


def single_key(
    result: RunResult,
    stats: SyncStats,
    elapsed_ms: float,
    info: dict[str, Any],
    *,
    asked: bool,
    delete_missing: bool,
    dry_run: bool = False,
) -> tuple[SyncError | None, dict[str, Any]]:
    """The error, if any, and the document of a ``key_name`` request's run.

    ``asked``: the request was valid, so the key was asked for. A dry run's
    document says ``dry_run`` and what the real run would have done.
    """

    def statistics(ok: bool) -> dict[str, Any]:
        return {
            "execution_time_ms": round(elapsed_ms, 2),
            "cloudflare_api_calls": stats.calls.api_calls,
            "cloudflare_retries": stats.calls.retries,
            "dynamodb_writes": stats.dynamodb_writes,
            "records_processed": int(asked),
            "records_stored": stats.records_written + stats.records_unchanged,
            "success_rate": 1.0 if ok else 0.0,
        }

    failure = result.error
    if failure is None:
        outcome = result.outcomes[0]  # a run that no error stopped settled every named key
        failure = _key_error(outcome, result, delete_missing=delete_missing, dry_run=dry_run)
        if failure is None:
            document = _synced(result, outcome, statistics(ok=True), info, dry_run=dry_run)
            if dry_run:
                document["data"] |= {"dry_run": True, "sample": stats.sample}
                document["data"]["processing_summary"]["record_stored"] = False
            return None, document
    return failure, error_document(failure, statistics(ok=False))


def _synced(
    result: RunResult,
    outcome: KeyOutcome,
    statistics: dict[str, Any],
    info: dict[str, Any],
    *,
    dry_run: bool,
) -> dict[str, Any]:
    key, superseded = outcome.key, outcome.action is Action.SUPERSEDED
    changed = outcome.action is Action.WRITTEN
    message = f"Synced '{key}': {'value stored' if changed else 'unchanged'}"
    if superseded:
        message = f"A newer sync already stored '{key}'; this result was discarded"
    if changed and dry_run:
        message = f"Dry run: '{key}' would be stored; nothing was written"
    record: dict[str, Any] = {"pk": f"NAMESPACE#{result.namespace_id}", "sk": f"KEY#{key}"}
    record |= {"value_type": outcome.value_type, "size_bytes": outcome.size_bytes}
    summary = {"key_retrieved": True, "record_processed": True, "record_stored": not superseded}
    data = {
        "message": message,
        "key_name": key,
        "record": {**record, "changed": changed, "superseded": superseded},
        "processing_summary": {**summary, "record_failed": False},
        "lambda": info,
    }
    return {"success": True, "data": data, "statistics": statistics}


def multi_key(
    request: SyncRequest,
    result: RunResult,
    stats: SyncStats,
    elapsed_ms: float,
    info: dict[str, Any],
) -> tuple[SyncError | None, dict[str, Any]]:
    """The error that stopped a multi-key run, if any, and its document."""
    settled = sum(
        (
            stats.records_written,
            stats.records_unchanged,
            stats.records_superseded,
            stats.records_deleted,
        )
    )
    attempted = settled + stats.records_failed
    statistics = {
        "execution_time_ms": round(elapsed_ms, 2),
        "keys_listed": stats.keys_listed,
        "keys_fetched": stats.keys_fetched,
        "records_written": stats.records_written,
        "records_unchanged": stats.records_unchanged,
        "records_deleted": stats.records_deleted,
        "records_failed": stats.records_failed,
        "records_superseded": stats.records_superseded,
        "cloudflare_api_calls": stats.calls.api_calls,
        "cloudflare_retries": stats.calls.retries,
        "dynamodb_batches": stats.dynamodb_reads,
        "dynamodb_writes": stats.dynamodb_writes,
        "state_writes": stats.state_writes,
        "records_processed": stats.keys_fetched + stats.records_deleted,
        "records_stored": stats.records_written + stats.records_unchanged,
        "success_rate": round(settled / attempted, 4) if attempted else 1.0,
        "next_cursor": result.next_cursor,
        "complete": result.complete,
    }
    if result.error is not None:
        document = error_document(result.error, statistics)
        if result.deletion is not None:  # a refused deletion: the guard's figures
            document["deletion"] = result.deletion
        return result.error, document
    state = "complete"
    if not result.complete:
        state = "stopped before the deadline; pass next_cursor to continue"
    counts = f"{stats.records_written} written, {stats.records_unchanged} unchanged, "
    counts += f"{stats.records_deleted} deleted, {stats.records_failed} failed"
    synced = "Dry run, nothing written: would sync" if request.dry_run else "Synced"
    data: dict[str, Any] = {
        "message": f"{synced} {stats.keys_fetched} key(s): {counts}; {state}",
        "selector": request.selector(),
        "complete": result.complete,
        "next_cursor": result.next_cursor,
        "failed_keys": stats.failures,
        "failed_keys_truncated": stats.records_failed > len(stats.failures),
        "lambda": info,
    }
    if request.dry_run:
        data |= {"dry_run": True, "sample": stats.sample}
    if result.deletion is not None:
        data["deletion"] = result.deletion
    return None, {"success": stats.records_failed == 0, "data": data, "statistics": statistics}


def error_document(error: SyncError, statistics: dict[str, Any]) -> dict[str, Any]:
    """The document of a failure; never holds a stack trace or a secret."""
    details: dict[str, Any] = {"type": error.type, "message": error.message}
    details["timestamp"] = utc_timestamp(datetime.now(UTC))
    details |= {"is_retryable": error.is_retryable, "severity": error.severity}
    return {"success": False, "error": details, "statistics": statistics}


def http_response(
    status: int, document: dict[str, Any], error: SyncError | None = None
) -> dict[str, Any]:
    """A Function URL response carrying the document as JSON."""
    headers = {"content-type": "application/json"}
    if error is not None and error.http_status == 405:
        headers["Allow"] = "GET, POST"
    if error is not None and (error.http_status == 503 or error.retry_after is not None):
        headers["Retry-After"] = str(max(math.ceil(error.retry_after or 1), 1))
    body = json.dumps(document, separators=(",", ":"))
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def _key_error(
    outcome: KeyOutcome, result: RunResult, *, delete_missing: bool, dry_run: bool
) -> SyncError | None:
    if outcome.error is not None or not delete_missing or outcome.value_type is not None:
        return outcome.error  # a value was read, or the key is missing without delete_missing
    refused = (result.deletion or {}).get("refused")
    done = {
        Action.DELETED: "its DynamoDB record was deleted",
        Action.MISSING: "no record to delete",
        Action.SUPERSEDED: "its record was kept: a sync stored the key after it was seen missing",
    }[outcome.action]
    if dry_run and outcome.action is Action.DELETED:
        done = "its DynamoDB record would be deleted (dry run)"
    elif refused and outcome.action is Action.MISSING:
        done = f"the deletion guard would refuse to delete its record: {refused}"
    return NotFoundError(f"Key '{outcome.key}' does not exist in the KV namespace; {done}")
