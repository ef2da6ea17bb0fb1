"""Hardening fixtures: a capture probe, an AWS fault proxy, fast retries, a serialised moto.

- ``probe`` captures everything the function lets out during a test: every log line
  (Powertools and the standard ``logging`` tree), every EMF metric document printed to
  stdout, every reply, and every X-Ray document (subsegments with their annotations and
  recorded exceptions): tracing runs as in a sampled Lambda invocation, through the
  function's own ``XRayProvider``, sending over UDP to a socket of ours standing in for
  the X-Ray daemon, so what is checked is exactly what would reach X-Ray.
- ``aws_proxy`` is an HTTP proxy on loopback in front of moto server. It forwards every
  AWS call and injects, per operation, the faults moto cannot produce (throttling,
  ``ValidationException``, ``AccessDeniedException``, hangs), as real wire responses, so
  botocore's own retry logic takes part exactly as it would against AWS.
- ``serial_moto_url`` is a moto server, in a process of its own, that handles one
  request at a time. Real DynamoDB applies a conditional write atomically; moto's
  threaded server does not (two UpdateItems can both pass their condition before either
  applies), so the concurrent load test runs against this one: a lost update it finds
  is ours, not moto's.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest

from tests.integration.conftest import LambdaLikeContext, Stack, stack  # noqa: F401

__all__ = ["AwsFaultProxy", "Outcome", "Probe", "Stack"]

TRACE_HEADER = "Root=1-673f1f40-0d1c2b3a4e5f60718293a4b5;Parent=53995c3f42cd8ad8;Sampled=1"


# --------------------------------------------------------------------------- probe


class Invoker(Protocol):
    """Anything that runs the handler on an event with a Lambda-like deadline."""

    def invoke(self, event: Any = None, timeout_ms: int = 30_000) -> Any: ...


@dataclass
class Outcome:
    """One invocation as the caller saw it."""

    response: Any
    elapsed: float
    raised: BaseException | None = None

    @property
    def document(self) -> dict[str, Any]:
        """The response document (the Function URL body, parsed)."""
        if isinstance(self.response, dict) and "statusCode" in self.response:
            doc: dict[str, Any] = json.loads(self.response["body"])
            return doc
        assert isinstance(self.response, dict), self.response
        return self.response

    @property
    def status(self) -> int | None:
        if isinstance(self.response, dict):
            return self.response.get("statusCode")
        return None

    @property
    def headers(self) -> dict[str, str]:
        if isinstance(self.response, dict):
            return dict(self.response.get("headers") or {})
        return {}

    @property
    def error(self) -> dict[str, Any] | None:
        error: dict[str, Any] | None = self.document.get("error")
        return error


@dataclass
class Probe:
    """Everything the function emitted: logs, metrics, replies, trace data."""

    capsys: pytest.CaptureFixture[str]
    caplog: pytest.LogCaptureFixture
    log: io.StringIO = field(default_factory=io.StringIO)
    stdout: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    traces: list[dict[str, Any]] = field(default_factory=list)
    raised: list[str] = field(default_factory=list)
    daemon: socket.socket | None = None

    def trace_documents(self) -> list[dict[str, Any]]:
        """Every X-Ray document received so far, nested subsegments included."""
        while self.daemon is not None:
            try:
                datagram = self.daemon.recv(65_536)
            except BlockingIOError:
                break
            header, _, body = datagram.partition(b"\n")
            assert json.loads(header) == {"format": "json", "version": 1}, header
            self.traces.append(json.loads(body))
        found: list[dict[str, Any]] = []
        pending: list[Any] = list(self.traces)
        while pending:
            node = pending.pop()
            if isinstance(node, dict):
                if "trace_id" in node or "name" in node:
                    found.append(node)
                pending.extend(node.values())
            elif isinstance(node, list):
                pending.extend(node)
        return found

    def annotations(self) -> list[dict[str, Any]]:
        """The annotations of every traced subsegment."""
        return [doc["annotations"] for doc in self.trace_documents() if doc.get("annotations")]

    def drain(self) -> None:
        """Move what was printed so far into ``stdout``."""
        captured = self.capsys.readouterr()
        self.stdout.append(captured.out)
        self.stdout.append(captured.err)

    def reset(self) -> None:
        """Forget everything captured so far (e.g. after a test's setup)."""
        self.drain()
        self.trace_documents()
        self.stdout.clear()
        self.log.seek(0)
        self.log.truncate()
        self.caplog.clear()
        self.replies.clear()
        self.traces.clear()
        self.raised.clear()

    def invoke(self, target: Invoker, event: Any = None, timeout_ms: int = 30_000) -> Outcome:
        """Invoke the real handler; an exception it raises is kept, not propagated."""
        started = time.monotonic()
        try:
            response = target.invoke(event, timeout_ms=timeout_ms)
        except Exception as exc:
            elapsed = time.monotonic() - started
            self.raised.append(f"{type(exc).__name__}: {exc}")
            return Outcome(None, elapsed, exc)
        elapsed = time.monotonic() - started
        self.replies.append(json.dumps(response, default=str))
        return Outcome(response, elapsed)

    def emf(self) -> list[dict[str, Any]]:
        """Every EMF document printed so far."""
        self.drain()
        docs = []
        for chunk in self.stdout:
            for line in chunk.splitlines():
                if line.startswith("{") and '"_aws"' in line:
                    docs.append(json.loads(line))
        return docs

    def metric(self, name: str) -> float | None:
        """Sum of a metric over every document, ``None`` when never emitted."""
        values = []
        for doc in self.emf():
            if name in doc:
                raw = doc[name]
                values.append(sum(raw) if isinstance(raw, list) else raw)
        return float(sum(values)) if values else None

    def failure_types(self) -> list[str]:
        """The ``ErrorType`` of every ``SyncFailed`` document."""
        return [doc.get("ErrorType", "?") for doc in self.emf() if "SyncFailed" in doc]

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.getvalue().splitlines() if line.strip()]

    def everything(self) -> str:
        """All captured text: logs, stdout/stderr (EMF), replies, trace data, raised errors."""
        self.drain()
        self.trace_documents()
        parts = [
            self.log.getvalue(),
            self.caplog.text,
            *(f"{r.getMessage()} {r.exc_text or ''}" for r in self.caplog.records),
            *self.stdout,
            *self.replies,
            *(json.dumps(doc, default=str) for doc in self.traces),
            *self.raised,
        ]
        return "\n".join(parts)

    def assert_no_secrets(self, *secrets: str) -> None:
        """No secret appears anywhere, raw or JSON-escaped."""
        text = self.everything()
        assert text.strip(), "nothing was captured; the probe is not wired up"
        for secret in secrets:
            assert secret, "an empty secret proves nothing"
            for form in {secret, json.dumps(secret)[1:-1]}:
                assert form not in text, f"secret leaked: {secret[:6]}…"


@pytest.fixture
def probe(
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Probe]:
    """Capture logs (at DEBUG), EMF, replies and the X-Ray documents of one test."""
    import observability
    import xray
    from observability import logger

    found = Probe(capsys=capsys, caplog=caplog)

    # The function's own X-Ray provider, sending to a UDP "daemon" of ours: what would
    # reach X-Ray is exactly what arrives here, whatever the provider does inside.
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.setblocking(False)
    found.daemon = daemon

    class RecordingTracer:
        """What ``observability`` uses of Powertools' Tracer: ``provider``, ``put_annotation``."""

        def __init__(self) -> None:
            self.provider = xray.XRayProvider(f"127.0.0.1:{daemon.getsockname()[1]}")

        def put_annotation(self, key: str, value: Any) -> None:
            self.provider.put_annotation(key, value)

    recording = RecordingTracer()
    monkeypatch.setattr(observability, "tracer", lambda: recording)
    # a sampled invocation, as Lambda sets it, so every subsegment is emitted
    monkeypatch.setenv(xray.TRACE_HEADER_ENV, TRACE_HEADER)

    log_handler: Any = logger.registered_handler
    previous_stream, previous_level = log_handler.stream, logger.log_level
    log_handler.stream = found.log
    logger.setLevel(logging.DEBUG)
    caplog.set_level(logging.INFO)
    try:
        yield found
    finally:
        log_handler.stream = previous_stream
        logger.setLevel(previous_level)
        daemon.close()


# --------------------------------------------------------------------------- fast retries


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink backoff sleeps (ours and botocore's); attempt counts and Retry-After stay real."""
    from botocore.retries.standard import ExponentialBackoff
    from tenacity import wait_exponential_jitter

    import cloudflare

    monkeypatch.setattr(
        cloudflare, "_backoff", wait_exponential_jitter(multiplier=0.01, max=0.05, jitter=0.01)
    )
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.01)
    monkeypatch.setitem(
        ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "non_throttling_base_scale", 0.005
    )


# --------------------------------------------------------------------------- AWS fault proxy


@dataclass
class AwsFault:
    """A fault for the next ``times`` calls of one AWS operation (``-1``: forever)."""

    operation: str
    code: str | None
    status: int
    message: str
    times: int
    hang: threading.Event | None = None


class AwsFaultProxy:
    """Forward AWS JSON-protocol calls to moto server, failing chosen operations.

    ``operation`` is the action name of the ``X-Amz-Target`` header
    (``UpdateItem``, ``GetSecretValue``...). ``calls`` records ``(operation, status)``
    for every request, faulted or not.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._faults: list[AwsFault] = []
        self._lock = threading.Lock()
        self.calls: list[tuple[str, int]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AwsFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        for fault in self._faults:
            if fault.hang is not None:
                fault.hang.set()
        self._server.shutdown()
        self._server.server_close()

    def add_fault(
        self,
        operation: str,
        code: str | None = None,
        *,
        status: int = 400,
        message: str = "injected fault",
        times: int = 1,
        hang: threading.Event | None = None,
    ) -> None:
        with self._lock:
            self._faults.append(AwsFault(operation, code, status, message, times, hang))

    def operations(self, operation: str) -> list[int]:
        """Statuses answered to ``operation``, in order."""
        return [status for op, status in self.calls if op == operation]

    def _take(self, operation: str) -> AwsFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.operation == operation:
                    if fault.times > 0:
                        fault.times -= 1
                        if fault.times == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self._serve()

            def do_GET(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target", "")
                operation = target.rpartition(".")[2] or "?"
                fault = proxy._take(operation)
                if fault is not None and fault.hang is not None:
                    fault.hang.wait(60)
                if fault is not None and fault.code is not None:
                    payload = json.dumps({"__type": fault.code, "message": fault.message})
                    self._reply(
                        fault.status,
                        {
                            "Content-Type": "application/x-amz-json-1.0",
                            "x-amzn-ErrorType": fault.code,
                        },
                        payload.encode(),
                    )
                    proxy.calls.append((operation, fault.status))
                    return
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                proxy.calls.append((operation, status))
                self._reply(status, headers, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()

        return Handler

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            skip = {"content-length", "connection", "transfer-encoding", "keep-alive"}
            forwarded = {k: v for k, v in headers.items() if k.lower() not in skip}
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            data = response.read()
            kept = {
                k: v
                for k, v in response.getheaders()
                if k.lower() not in skip and k.lower() not in {"date", "server"}
            }
            return response.status, kept, data
        finally:
            connection.close()


@pytest.fixture
def aws_proxy(
    request: pytest.FixtureRequest, moto_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AwsFaultProxy]:
    """Route the function's AWS calls (DynamoDB, Secrets Manager) through a fault proxy.

    Set up after ``stack``, whose environment it then redirects.
    """
    request.getfixturevalue("stack")
    import aws_clients
    import credentials

    proxy = AwsFaultProxy(moto_server_url).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    aws_clients.reset_clients()
    credentials.reset_cache()
    try:
        yield proxy
    finally:
        proxy.stop()
        aws_clients.reset_clients()
        credentials.reset_cache()


# --------------------------------------------------------------------------- serialised moto


@pytest.fixture(scope="module")
def serial_moto_url() -> Iterator[str]:
    """A moto server in its own process, applying one request at a time (see _serial_moto)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.hardening._serial_moto"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("PORT "), f"serial moto server did not start: {line!r}"
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def new_context(timeout_ms: int = 30_000) -> LambdaLikeContext:
    """A Lambda-like context with ``timeout_ms`` left."""
    return LambdaLikeContext(timeout_ms)
