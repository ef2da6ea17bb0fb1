"""Lambda entry point: parse the event, sync, shape the reply.

Terraform references this as ``handler.lambda_handler``.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

from bulk import BulkStats, sync_many
from config import SettingsError, load_settings
from continuation import continue_run
from deadline import Deadline, activate
from errors import ConfigurationError, InternalError, SyncError
from events import Trigger, detect_trigger, parse_event
from observability import count, logger, metrics, record_failure, subsegment
from redaction import redact
from replies import (
    bulk_document,
    bulk_statistics,
    error_document,
    error_headers,
    http_response,
    statistics,
    success_document,
)
from sync import SyncStats, sync_key

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from config import Settings
    from events import SyncRequest

# Function URL status of a multi-key run in which some keys failed.
PARTIAL_FAILURE_STATUS = 207

_cold_start = True


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Sync Cloudflare KV keys into DynamoDB.

    Returns the response document for direct and scheduled invocations and an
    HTTP response for Function URL requests. Scheduled invocations raise on
    retryable failures so Lambda's retries and on-failure destination see them.
    """
    global _cold_start
    cold_start, _cold_start = _cold_start, False
    started = time.perf_counter()
    deadline = Deadline(context)
    activate(deadline)
    trigger = detect_trigger(event)
    lambda_info = {"cold_start": cold_start, "request_id": getattr(context, "aws_request_id", None)}

    try:
        settings = _settings()
        request = parse_event(event, settings.default_key_name)
    except SyncError as exc:
        _emit(0, 0, 0, 0)
        return _fail(exc, trigger, statistics(SyncStats(), _elapsed_ms(started)))
    logger.append_keys(trigger=trigger.value)
    if request.is_bulk:
        return _sync_many(
            request, settings, deadline, context=context, lambda_info=lambda_info, started=started
        )

    key_name = request.key_name or settings.default_key_name
    logger.append_keys(key_name=key_name)
    stats = SyncStats()
    try:
        with subsegment("sync", key_name=key_name):
            result = sync_key(
                key_name,
                settings,
                deadline,
                stats,
                delete_missing=request.wants_delete_missing(settings.delete_missing),
            )
    except Exception as exc:
        stats.records_failed += 1
        _emit(stats.calls.api_calls, stats.calls.retries, stats.dynamodb_writes, stats.value_bytes)
        return _fail(_as_sync_error(exc), trigger, statistics(stats, _elapsed_ms(started)))

    _emit(stats.calls.api_calls, stats.calls.retries, stats.dynamodb_writes, stats.value_bytes)
    count("SyncSucceeded")
    logger.info(
        "Sync finished",
        extra={"changed": result.outcome.changed, "superseded": result.outcome.superseded},
    )
    lambda_info["remaining_time_ms"] = deadline.remaining_ms()
    document = success_document(result, statistics(stats, _elapsed_ms(started)), lambda_info)
    return http_response(200, document) if trigger is Trigger.FUNCTION_URL else document


def _sync_many(
    request: SyncRequest,
    settings: Settings,
    deadline: Deadline,
    *,
    context: LambdaContext,
    lambda_info: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    # Imported here: single-key invocations, the common case, never load them.

    stats = BulkStats()
    logger.append_keys(selector=_selector_label(request))
    try:
        with subsegment("sync_many"):
            result = sync_many(request, settings, deadline, stats)
    except Exception as exc:
        _emit(stats.calls.api_calls, stats.calls.retries, stats.dynamodb_writes, stats.value_bytes)
        partial = bulk_statistics(stats, _elapsed_ms(started), request.cursor, complete=False)
        return _fail(_as_sync_error(exc), request.trigger, partial)

    _emit(stats.calls.api_calls, stats.calls.retries, stats.dynamodb_writes, stats.value_bytes)
    count("RecordsWritten", stats.records_written)
    count("RecordsUnchanged", stats.records_unchanged)
    count("RecordsDeleted", stats.records_deleted)
    count("RecordsFailed", stats.records_failed)
    for error_type in sorted({failure["type"] for failure in stats.failures}):
        record_failure(error_type)
    statistics_block = bulk_statistics(
        stats, _elapsed_ms(started), result.next_cursor, complete=result.complete
    )
    if result.error is not None:
        return _fail(result.error, request.trigger, statistics_block)

    continued = False
    if not result.complete and result.next_cursor:
        continued = continue_run(request, result.next_cursor, settings, context)
    if stats.records_failed == 0:
        count("SyncSucceeded")
    logger.info("Bulk sync finished", extra={k: v for k, v in statistics_block.items()})
    lambda_info["remaining_time_ms"] = deadline.remaining_ms()
    document = bulk_document(request, result, statistics_block, lambda_info, continued)
    if request.trigger is Trigger.FUNCTION_URL:
        status = 200 if document["success"] else PARTIAL_FAILURE_STATUS
        return http_response(status, document)
    return document


def _fail(error: SyncError, trigger: Trigger, stats: dict[str, Any]) -> dict[str, Any]:
    """Report a failure: metric, log line, and the reply the trigger expects."""
    # Upstream text (an error page quoting the request) may carry the token.
    error.message = redact(error.message)
    error.args = (error.message,)
    record_failure(error.type)
    log = logger.warning if error.severity == "warning" else logger.error
    log(
        "Sync failed",
        extra={
            "error_type": error.type,
            "is_retryable": error.is_retryable,
            "reason": error.message,
        },
    )
    document = error_document(error, stats)
    if trigger is Trigger.FUNCTION_URL:
        return http_response(error.http_status, document, error_headers(error))
    if trigger is Trigger.SCHEDULE and error.is_retryable:
        raise error
    return document


def _as_sync_error(exc: Exception) -> SyncError:
    if isinstance(exc, SyncError):
        return exc
    # Not logger.exception: the exception's text may quote a secret, so log it redacted.
    logger.error(
        "Unexpected failure",
        extra={
            "error_class": type(exc).__name__,
            "traceback": redact("".join(traceback.format_exception(exc))),
        },
    )
    return InternalError("Unexpected internal error; see the function's logs")


def _selector_label(request: SyncRequest) -> str:
    if request.key_names is not None:
        return f"key_names[{len(request.key_names)}]"
    if request.prefix is not None:
        return f"prefix:{request.prefix}"
    return "all"


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise ConfigurationError(str(exc)) from None


def _emit(api_calls: int, retries: int, writes: int, value_bytes: int) -> None:
    count("CloudflareApiCalls", api_calls)
    count("CloudflareRetries", retries)
    count("DynamoDBWrites", writes)
    if value_bytes:
        from aws_lambda_powertools.metrics import MetricUnit

        count("ValueBytes", value_bytes, MetricUnit.Bytes)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
