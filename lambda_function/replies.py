"""Replies: the response document operators script against, and its HTTP form."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from records import utc_timestamp

if TYPE_CHECKING:
    from bulk import BulkResult, BulkStats
    from errors import SyncError
    from events import SyncRequest
    from sync import SyncResult, SyncStats


def statistics(stats: SyncStats, execution_time_ms: float) -> dict[str, Any]:
    """The ``statistics`` block, present on success and failure alike."""
    processed = stats.records_processed
    return {
        "execution_time_ms": round(execution_time_ms, 2),
        "cloudflare_api_calls": stats.calls.api_calls,
        "cloudflare_retries": stats.calls.retries,
        "dynamodb_writes": stats.dynamodb_writes,
        "records_processed": processed,
        "records_stored": stats.records_stored,
        "success_rate": round((processed - stats.records_failed) / processed, 4)
        if processed
        else 0.0,
    }


def success_document(
    result: SyncResult, stats: dict[str, Any], lambda_info: dict[str, Any]
) -> dict[str, Any]:
    """The document for a key that was synced (or found already newer)."""
    outcome = result.outcome
    if outcome.superseded:
        message = f"A newer sync already stored '{result.key_name}'; this result was discarded"
    elif outcome.changed:
        message = f"Synced '{result.key_name}': value stored"
    else:
        message = f"Synced '{result.key_name}': unchanged, sync time refreshed"
    return {
        "success": True,
        "data": {
            "message": message,
            "key_name": result.key_name,
            "record": {
                "pk": result.record.pk,
                "sk": result.record.sk,
                "value_type": result.record.value_type,
                "size_bytes": result.record.size_bytes,
                "changed": outcome.changed,
                "superseded": outcome.superseded,
            },
            "processing_summary": {
                "key_retrieved": True,
                "record_processed": True,
                "record_stored": not outcome.superseded,
                "record_failed": False,
            },
            "lambda": lambda_info,
        },
        "statistics": stats,
    }


def error_document(error: SyncError, stats: dict[str, Any]) -> dict[str, Any]:
    """The document for a failure; never holds a stack trace or a secret."""
    return {
        "success": False,
        "error": {
            "type": error.type,
            "message": error.message,
            "timestamp": utc_timestamp(datetime.now(UTC)),
            "is_retryable": error.is_retryable,
            "severity": error.severity,
        },
        "statistics": stats,
    }


def http_response(
    status: int, document: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """A Function URL response carrying the document as JSON."""
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "body": json.dumps(document, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def error_headers(error: SyncError) -> dict[str, str]:
    """Extra headers an error status needs (``Allow``, ``Retry-After``)."""
    headers: dict[str, str] = {}
    if error.http_status == 405:
        headers["Allow"] = "GET, POST"
    if error.http_status == 503:
        headers["Retry-After"] = str(max(math.ceil(error.retry_after or 1), 1))
    return headers


def bulk_statistics(
    stats: BulkStats, execution_time_ms: float, next_cursor: str | None, *, complete: bool
) -> dict[str, Any]:
    """The ``statistics`` block of a multi-key run."""
    processed = stats.keys_fetched + stats.records_deleted
    settled = (
        stats.records_written
        + stats.records_unchanged
        + stats.records_superseded
        + stats.records_deleted
    )
    return {
        "execution_time_ms": round(execution_time_ms, 2),
        "keys_listed": stats.keys_listed,
        "keys_fetched": stats.keys_fetched,
        "records_written": stats.records_written,
        "records_unchanged": stats.records_unchanged,
        "records_deleted": stats.records_deleted,
        "records_failed": stats.records_failed,
        "records_superseded": stats.records_superseded,
        "cloudflare_api_calls": stats.calls.api_calls,
        "cloudflare_retries": stats.calls.retries,
        "dynamodb_batches": stats.reads.calls,
        "dynamodb_writes": stats.dynamodb_writes,
        "records_processed": processed,
        "records_stored": stats.records_written + stats.records_unchanged,
        "success_rate": round(settled / (settled + stats.records_failed), 4)
        if settled + stats.records_failed
        else 1.0,
        "next_cursor": next_cursor,
        "complete": complete,
    }


def bulk_document(
    request: SyncRequest,
    result: BulkResult,
    stats: dict[str, Any],
    lambda_info: dict[str, Any],
    continued: bool,
) -> dict[str, Any]:
    """The document of a multi-key run that was not stopped by an error."""
    s = result.stats
    if result.complete:
        state = "complete"
    elif continued:
        state = "continuing in a new invocation"
    else:
        state = "stopped before the deadline; pass next_cursor to continue"
    message = (
        f"Synced {s.keys_fetched} key(s): {s.records_written} written, "
        f"{s.records_unchanged} unchanged, {s.records_deleted} deleted, "
        f"{s.records_failed} failed; {state}"
    )
    return {
        "success": s.records_failed == 0,
        "data": {
            "message": message,
            "selector": request.selector(),
            "complete": result.complete,
            "next_cursor": result.next_cursor,
            "continued": continued,
            "failed_keys": s.failures,
            "failed_keys_truncated": s.records_failed > len(s.failures),
            "lambda": lambda_info,
        },
        "statistics": stats,
    }
