"""Logs and metrics (Powertools), set up once per container."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from kv_sync.redaction import redact

if TYPE_CHECKING:
    from kv_sync.model import SyncStats

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "kv-sync"
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "KvSync"


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON log format, with every loaded secret replaced in the line."""

    def serialize(self, log: Any) -> str:
        """The log line as JSON, redacted."""
        return redact(super().serialize(log))


logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
metrics = Metrics(service=SERVICE, namespace=METRICS_NAMESPACE)


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    """Add to a metric flushed at the end of the invocation."""
    metrics.add_metric(name=name, unit=unit, value=value)


def record_failure(error_type: str) -> None:
    """Emit ``SyncFailed`` with an ``ErrorType`` dimension, right away.

    It is a document of its own, so that the dimension does not spread to the
    invocation's other metrics.
    """
    with single_metric(
        name="SyncFailed",
        unit=MetricUnit.Count,
        value=1,
        namespace=METRICS_NAMESPACE,
        default_dimensions={"service": SERVICE},
    ) as metric:
        metric.add_dimension(name="ErrorType", value=error_type)


def emit_run_metrics(stats: SyncStats, *, multi_key: bool) -> None:
    """The metrics of a run, whether it succeeded or not."""
    count("CloudflareApiCalls", stats.calls.api_calls)
    # Zero counts are left out: a missing datapoint sums to nothing all the same.
    if stats.calls.retries:
        count("CloudflareRetries", stats.calls.retries)
    if stats.dynamodb_writes:
        count("DynamoDBWrites", stats.dynamodb_writes)
    if stats.value_bytes:
        count("ValueBytes", stats.value_bytes, MetricUnit.Bytes)
    if multi_key:
        count("RecordsWritten", stats.records_written)
        count("RecordsUnchanged", stats.records_unchanged)
        count("RecordsDeleted", stats.records_deleted)
        count("RecordsFailed", stats.records_failed)
