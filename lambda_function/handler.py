"""Lambda entry point: parse the event, sync the key, shape the reply.

Terraform references this as ``handler.lambda_handler``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from config import SettingsError, load_settings
from deadline import Deadline
from errors import ConfigurationError, InternalError, SyncError
from events import Trigger, detect_trigger, parse_event
from observability import count, logger, metrics, record_failure, subsegment
from replies import error_document, error_headers, http_response, statistics, success_document
from sync import SyncStats, sync_key

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

_cold_start = True


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Sync one Cloudflare KV key into DynamoDB.

    Returns the response document for direct and scheduled invocations and an
    HTTP response for Function URL requests. Scheduled invocations raise on
    retryable failures so Lambda's retries and on-failure destination see them.
    """
    global _cold_start
    cold_start, _cold_start = _cold_start, False
    started = time.perf_counter()
    deadline = Deadline(context)
    stats = SyncStats()
    trigger = detect_trigger(event)

    try:
        with subsegment("sync"):
            settings = _settings()
            request = parse_event(event, settings.default_key_name)
            logger.append_keys(key_name=request.key_name, trigger=trigger.value)
            result = sync_key(request.key_name, settings, deadline, stats)
    except SyncError as exc:
        error = exc
    except Exception:
        logger.exception("Unexpected failure")
        error = InternalError("Unexpected internal error; see the function's logs")
    else:
        _emit_metrics(stats)
        count("SyncSucceeded")
        logger.info(
            "Sync finished",
            extra={"changed": result.outcome.changed, "superseded": result.outcome.superseded},
        )
        document = success_document(
            result,
            statistics(stats, _elapsed_ms(started)),
            {
                "cold_start": cold_start,
                "request_id": getattr(context, "aws_request_id", None),
                "remaining_time_ms": deadline.remaining_ms(),
            },
        )
        if trigger is Trigger.FUNCTION_URL:
            return http_response(200, document)
        return document

    stats.records_failed += 1
    _emit_metrics(stats)
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
    document = error_document(error, statistics(stats, _elapsed_ms(started)))
    if trigger is Trigger.FUNCTION_URL:
        return http_response(error.http_status, document, error_headers(error))
    if trigger is Trigger.SCHEDULE and error.is_retryable:
        raise error
    return document


def _settings() -> Any:
    try:
        return load_settings()
    except SettingsError as exc:
        raise ConfigurationError(str(exc)) from None


def _emit_metrics(stats: SyncStats) -> None:
    count("CloudflareApiCalls", stats.calls.api_calls)
    count("CloudflareRetries", stats.calls.retries)
    count("DynamoDBWrites", stats.dynamodb_writes)
    if stats.value_bytes:
        from aws_lambda_powertools.metrics import MetricUnit

        count("ValueBytes", stats.value_bytes, MetricUnit.Bytes)


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
