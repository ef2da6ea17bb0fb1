"""Logging, metrics and tracing (Powertools), set up once per container.

Tracing is Powertools' ``Tracer`` on ``xray.XRayProvider``, a light provider
of our own, instead of the X-Ray SDK's recorder (see ``xray``). The tracer
exists only where tracing can work (inside Lambda, not disabled), and is
created, with its module, on the first traced call.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aws_lambda_powertools import Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "kv-sync"
METRICS_NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "KvSync"

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=METRICS_NAMESPACE)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def tracing_enabled() -> bool:
    """Whether X-Ray tracing can work here (the rules Powertools Tracer applies)."""
    return (
        bool(os.environ.get("LAMBDA_TASK_ROOT"))
        and not _truthy(os.environ.get("POWERTOOLS_TRACE_DISABLED"))
        and not _truthy(os.environ.get("AWS_SAM_LOCAL"))
    )


@cache
def tracer() -> Tracer | None:
    """The Powertools tracer (on ``XRayProvider``), or ``None`` when tracing is off."""
    if not tracing_enabled():
        return None
    from aws_lambda_powertools import Tracer

    from xray import TRACED_MODULES, XRayProvider

    return Tracer(service=SERVICE, provider=XRayProvider(), patch_modules=TRACED_MODULES)


@contextmanager
def subsegment(name: str, **annotations: str) -> Iterator[None]:
    """Trace a block as an X-Ray subsegment with annotations (no-op untraced)."""
    active = tracer()
    if active is None:
        yield
        return
    with active.provider.in_subsegment(f"## {name}") as segment:
        for key, value in annotations.items():
            segment.put_annotation(key, value)
        yield


def annotate(**annotations: str | bool) -> None:
    """Annotate the current trace entity (no-op untraced)."""
    active = tracer()
    if active is None:
        return
    for key, value in annotations.items():
        active.put_annotation(key, value)


def count(name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count) -> None:
    """Add to a metric flushed at the end of the invocation."""
    metrics.add_metric(name=name, unit=unit, value=value)


def record_failure(error_type: str) -> None:
    """Emit ``SyncFailed`` with an ``ErrorType`` dimension, right away.

    It is its own EMF document so the dimension does not spread to the other
    metrics of the invocation.
    """
    dimensions: dict[str, Any] = {"service": SERVICE}
    with single_metric(
        name="SyncFailed",
        unit=MetricUnit.Count,
        value=1,
        namespace=METRICS_NAMESPACE,
        default_dimensions=dimensions,
    ) as metric:
        metric.add_dimension(name="ErrorType", value=error_type)
