"""Tracing: Powertools ``Tracer`` on the AWS X-Ray SDK, kept behind this one module.

The X-Ray SDK is in maintenance since February 2026 and reaches end of support
in February 2027. Nothing else knows which tracer is used, so moving to
Powertools' OpenTelemetry provider, once it ships, changes this module alone.

Only inside Lambda (and unless ``POWERTOOLS_TRACE_DISABLED``): the handler is
``## lambda_handler`` (responses never captured), our blocks ``## name``
subsegments with annotations, and every AWS and Cloudflare call is traced
(``patch_modules``), the trace header passed on to AWS.

Cost: in Lambda the SDK sends every subsegment as its own UDP datagram when it
closes (Powertools sets the streaming threshold to 0). Here closed subsegments
wait until ``STREAMING_THRESHOLD`` have built up (only long multi-key runs get
there) and ``capture_handler`` sends the rest as the invocation ends: one
datagram for a single-key invocation.
"""

from __future__ import annotations

import functools
import os
import threading
import traceback
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from kv_sync.errors import SyncError
from kv_sync.redaction import redact

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aws_lambda_powertools import Tracer

P = ParamSpec("P")
T = TypeVar("T")

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME") or "kv-sync"
TRACED_MODULES = ("botocore", "requests")
TRACE_HEADER_ENV = "_X_AMZN_TRACE_ID"  # Lambda's trace header of the current invocation
STREAMING_THRESHOLD = 30  # about 20 KB of documents: well inside a 64 KB datagram


@cache
def tracer() -> Tracer | None:
    """The container's tracer, created on first use; ``None`` where tracing is off.

    Off follows Powertools' rules: outside Lambda, under SAM local, or disabled.
    """
    flags = {"1", "true", "yes", "on"}
    off = {
        os.environ.get(name, "").lower() for name in ("POWERTOOLS_TRACE_DISABLED", "AWS_SAM_LOCAL")
    }
    if not os.environ.get("LAMBDA_TASK_ROOT") or off & flags:
        return None
    from aws_lambda_powertools import Tracer

    active = Tracer(service=SERVICE, patch_modules=TRACED_MODULES)
    _recorder().configure(streaming_threshold=STREAMING_THRESHOLD, context=_invocation_context())
    return active


def capture_handler(handler: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """Trace a Lambda handler, sending its trace data before it returns or raises."""
    active = tracer()
    if active is None:
        return handler
    traced = active.capture_lambda_handler(handler, capture_response=False)

    @functools.wraps(handler)
    def wrapper(event: Any, context: Any) -> T:
        _invocation.header = os.environ.get(TRACE_HEADER_ENV)
        try:
            return traced(event, context)  # type: ignore[no-any-return]
        finally:
            flush()
            _invocation.header = None

    return wrapper


@contextmanager
def subsegment(name: str, **annotations: str) -> Iterator[None]:
    """Trace a block as the subsegment ``## name``, with annotations."""
    if tracer() is None:
        yield
        return
    recorder = _recorder()
    segment = recorder.begin_subsegment(f"## {name}")
    if segment is not None:
        for key, value in annotations.items():
            segment.put_annotation(key, value)
    try:
        yield
    except Exception as exc:
        if segment is not None:
            segment.add_exception(_redacted(exc), traceback.extract_tb(exc.__traceback__, 10))
        raise
    finally:
        recorder.end_subsegment()


def annotate(**annotations: str) -> None:
    """Annotate the innermost open subsegment."""
    active = tracer()
    if active is not None:
        for key, value in annotations.items():
            active.put_annotation(key, value)


def carry(call: Callable[P, T]) -> Callable[P, T]:
    """``call``, to run on another thread inside the caller's current subsegment.

    The SDK keeps its context per thread: without this, calls made from a
    thread pool would hang directly under Lambda's segment.
    """
    if tracer() is None:
        return call
    recorder = _recorder()
    entity = recorder.get_trace_entity()

    @functools.wraps(call)
    def in_thread(*args: P.args, **kwargs: P.kwargs) -> T:
        recorder.set_trace_entity(entity)
        try:
            return call(*args, **kwargs)
        finally:
            recorder.clear_trace_entities()

    return in_thread


def flush() -> None:
    """Send every closed subsegment of this invocation to the daemon now."""
    if tracer() is None:
        return
    recorder = _recorder()
    threshold, recorder.streaming_threshold = recorder.streaming_threshold, 0
    try:
        recorder.stream_subsegments()
    finally:
        recorder.streaming_threshold = threshold


_invocation = threading.local()  # the trace header of the invocation in progress


def _invocation_context() -> Any:
    """The SDK's Lambda context, re-reading Lambda's trace header only when it changes.

    The SDK's own re-reads and parses ``_X_AMZN_TRACE_ID`` on every call that looks
    up the current subsegment: about 30 times per invocation. ``capture_handler``
    reads it once per invocation instead.
    """
    from aws_xray_sdk.core.lambda_launcher import LambdaContext

    class InvocationContext(LambdaContext):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._header = threading.local()

        def _refresh_context(self) -> None:
            header = getattr(_invocation, "header", None) or os.environ.get(TRACE_HEADER_ENV)
            if getattr(self._local, "segment", None) and self._header.__dict__.get("at") == header:
                return
            self._header.at = header
            super()._refresh_context()

    return InvocationContext()


def _recorder() -> Any:
    from aws_xray_sdk.core import xray_recorder

    return xray_recorder


def _redacted(exc: Exception) -> Exception:
    """What a trace records of an exception: ours as they are (redacted when
    created), any other as its type name with a redacted message."""
    if isinstance(exc, SyncError):
        return exc
    twin: type[Exception] = type(type(exc).__name__, (Exception,), {})
    return twin(redact(str(exc)))
