"""A Lambda-like container for tests: the real handler, traced, in a process of its own.

Run as ``python -m tests.support.lambda_container [--fast-aws-retries]`` (see
``tests.support.traced``, which drives it). The environment says, as Lambda's does,
that this is a function (``LAMBDA_TASK_ROOT``) with active tracing
(``AWS_XRAY_DAEMON_ADDRESS``), so Powertools' Tracer runs on the real X-Ray SDK,
patching botocore and requests. That is why it is a process of its own: the SDK
patches them for good, and the test process must stay untraced.

Protocol: one JSON object per line on stdin, one reply per line on stdout.

- request: ``{"event": ..., "timeout_ms": int, "trace_header": str, "env": {name: value},
  "reset": bool, "sabotage": str | null}``. ``env`` is the function's environment for
  this invocation (variables of the previous one that it lacks are removed);
  ``reset`` drops the cached clients and secret, as a new container would;
  ``trace_header`` becomes ``_X_AMZN_TRACE_ID``, as Lambda sets it per invocation.
- reply: ``{"response": ..., "raised": {...} | null, "output": str, "elapsed": float}``;
  ``output`` is everything written to stdout, stderr and the logging tree during the
  invocation (log lines, EMF metric documents, warnings).

``sabotage`` names a test double for one invocation: ``session-error-quoting-headers``
makes the Cloudflare session fail with an exception whose text quotes the request's
headers, the way a third-party library could.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO
from unittest import mock


class _Capture(io.TextIOBase):
    """A text stream whose target is swapped per invocation (handlers keep the object)."""

    def __init__(self) -> None:
        self.target = io.StringIO()

    def write(self, text: str) -> int:
        return self.target.write(text)

    def writable(self) -> bool:
        return True

    def take(self) -> str:
        """What was written since the last call."""
        text, self.target = self.target.getvalue(), io.StringIO()
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast-aws-retries", action="store_true")
    args = parser.parse_args(argv)

    # Replies go to the original stdout; whatever else writes to fd 1 goes to stderr.
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    capture = _Capture()
    sys.stdout = sys.stderr = capture
    root = logging.getLogger()
    root.addHandler(logging.StreamHandler(capture))
    root.setLevel(logging.INFO)
    if args.fast_aws_retries:
        _fast_aws_retries()

    # The init phase: the handler module is imported before the first invocation.
    from kv_sync.handler import lambda_handler
    from kv_sync.ratelimit import shared_limiter
    from local.lambda_context import LambdaContext
    from tests.support.function import reset_function_state

    managed: set[str] = set()
    for line in sys.stdin:
        request = json.loads(line)
        env: dict[str, str] = request.get("env") or {}
        for name in managed - set(env):
            os.environ.pop(name, None)
        os.environ.update(env)
        managed = set(env)
        os.environ["_X_AMZN_TRACE_ID"] = request["trace_header"]
        if request.get("reset"):
            reset_function_state()
            shared_limiter(1)  # a changed limit starts a fresh window
        capture.take()
        started = time.perf_counter()
        response, raised = None, None
        with _sabotaged(request.get("sabotage")):
            try:
                context = LambdaContext(timeout_ms=int(request.get("timeout_ms", 30_000)))
                response = lambda_handler(request.get("event"), context)
            except Exception as exc:  # reported to the test, which decides
                raised = {
                    "class": type(exc).__name__,
                    "type": getattr(exc, "type", None),
                    "is_retryable": getattr(exc, "is_retryable", None),
                    "message": str(exc),
                }
        elapsed = time.perf_counter() - started
        reply = {"response": response, "raised": raised, "output": capture.take()}
        reply["elapsed"] = elapsed
        _send(replies, reply)
    return 0


def _send(stream: TextIO, reply: dict[str, Any]) -> None:
    stream.write(json.dumps(reply, default=str) + "\n")
    stream.flush()


def _fast_aws_retries() -> None:
    """Shrink botocore's retry backoff; the attempts themselves stay as configured."""
    from botocore.retries.standard import ExponentialBackoff

    config = ExponentialBackoff._DEFAULT_BACKOFF_CONFIG
    config["throttling_base_scale"] = 0.01
    config["non_throttling_base_scale"] = 0.005


@contextmanager
def _sabotaged(name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    if name != "session-error-quoting-headers":
        raise ValueError(f"unknown sabotage {name!r}")
    from kv_sync import cloudflare

    def failing_request(method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
        raise RuntimeError(f"adapter failed for {method} {url} with headers {headers}")

    with mock.patch.object(cloudflare.SESSION, "request", failing_request):
        yield


if __name__ == "__main__":
    raise SystemExit(main())
