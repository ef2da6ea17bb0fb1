"""The Lambda entry point, ``kv_sync.handler.lambda_handler``: parse, run the engine, reply."""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

from kv_sync import engine, replies, tracing
from kv_sync.errors import InternalError, SyncError
from kv_sync.events import detect_trigger, parse_event
from kv_sync.model import RunResult, SyncRequest, SyncStats, Trigger
from kv_sync.observability import count, emit_run_metrics, logger, metrics, record_failure
from kv_sync.runtime import Deadline, activate
from kv_sync.settings import Settings, load_settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

PARTIAL_FAILURE_STATUS = 207  # a multi-key run in which some keys failed
_cold_start = True


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
@tracing.capture_handler
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Sync the Cloudflare KV keys an event selects into DynamoDB.

    Returns the response document to direct invocations, and an HTTP response to
    Function URL requests. A scheduled invocation that fails raises, whatever the
    error, so that Lambda's Errors metric, its retries and the failure queue see it;
    one whose run completed with some keys failed returns (those keys are counted).
    """
    global _cold_start  # noqa: PLW0603 - per-container state
    info: dict[str, Any] = {"cold_start": _cold_start, "request_id": context.aws_request_id}
    _cold_start = False
    started = time.perf_counter()
    deadline = Deadline(context)
    activate(deadline)
    trigger = detect_trigger(event)
    stats = SyncStats()
    settings, request = Settings(table_name="", secret_name=""), None
    try:
        settings = load_settings()
        request = parse_event(event, settings.default_key_name)
        logger.append_keys(trigger=trigger.value, **_labels(request))
        tracing.annotate(**_labels(request))
        result = engine.run(request, settings, deadline, stats)
    except Exception as exc:
        result = RunResult(False, request.cursor if request else None, _typed(exc))
    multi_key = request is not None and request.is_bulk
    emit_run_metrics(stats, multi_key=multi_key)
    for error_type in sorted({failure["type"] for failure in stats.failures if multi_key}):
        record_failure(error_type)
    elapsed_ms = (time.perf_counter() - started) * 1000
    info["remaining_time_ms"] = deadline.remaining_ms()
    if request is None or not request.is_bulk:
        delete_missing = request is not None and request.wants_delete_missing(
            settings.delete_missing
        )
        error, document = replies.single_key(
            result,
            stats,
            elapsed_ms,
            info,
            asked=request is not None,
            delete_missing=delete_missing,
            dry_run=request is not None and request.dry_run,
        )
    else:
        error, document = replies.multi_key(request, result, stats, elapsed_ms, info)
    if error is not None:
        return _fail(error, trigger, document)
    if document["success"]:
        count("SyncSucceeded")
    logger.info("Sync finished", extra={"statistics": document["statistics"]})
    if trigger is not Trigger.FUNCTION_URL:
        return document
    return replies.http_response(200 if document["success"] else PARTIAL_FAILURE_STATUS, document)


def _fail(error: SyncError, trigger: Trigger, document: dict[str, Any]) -> dict[str, Any]:
    """Report a failure: its metric and log line, then the reply its trigger expects."""
    record_failure(error.type)
    log = logger.warning if error.severity == "warning" else logger.error
    reason = {"error_type": error.type, "is_retryable": error.is_retryable, "reason": error.message}
    log("Sync failed", extra=reason)
    if trigger is Trigger.FUNCTION_URL:
        return replies.http_response(error.http_status, document, error)
    if trigger is Trigger.SCHEDULE:
        raise error  # nobody reads a scheduled run's reply: Errors, retries and the queue see it
    return document


def _typed(exc: Exception) -> SyncError:
    if isinstance(exc, SyncError):
        return exc
    # The log formatter redacts any secret the traceback's text might quote.
    trace = "".join(traceback.format_exception(exc))
    logger.error(
        "Unexpected failure", extra={"error_class": type(exc).__name__, "traceback": trace}
    )
    return InternalError("Unexpected internal error; see the function's logs")


def _labels(request: SyncRequest) -> dict[str, str]:
    if request.key_name is not None:
        return {"key_name": request.key_name}
    if request.key_names is not None:
        return {"selector": f"key_names[{len(request.key_names)}]"}
    return {"selector": f"prefix:{request.prefix}" if request.prefix is not None else "all"}
