"""An HTTP proxy in front of moto server that fails chosen AWS operations on the wire.

It forwards every AWS JSON-protocol call (DynamoDB, Secrets Manager) and injects,
per operation, what moto cannot produce: throttling, ``ValidationException``,
``AccessDeniedException``, a crafted reply (``UnprocessedKeys``), or a hang. The
faults are real wire responses, so botocore's own retry logic takes part exactly as
it would against AWS.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Reply = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class AwsFault:
    """A fault for the next ``times`` calls of one AWS operation (``-1``: forever)."""

    operation: str
    code: str | None
    status: int
    message: str
    times: int
    hang: threading.Event | None = None
    reply: Reply | None = None


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
        """The proxy's address, the function's ``AWS_ENDPOINT_URL``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AwsFaultProxy:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release any hung call and stop serving."""
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
        reply: Reply | None = None,
    ) -> None:
        """Fail the next ``times`` calls of ``operation`` (``-1``: every call).

        ``code``: answer ``status`` with that AWS error; ``None``: forward the call
        (after ``hang``, if given, is set). ``reply``: answer 200 with the JSON it
        makes of the request's JSON, instead of forwarding.
        """
        with self._lock:
            self._faults.append(AwsFault(operation, code, status, message, times, hang, reply))

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
                if fault is not None and fault.reply is not None:
                    payload = json.dumps(fault.reply(json.loads(body or b"{}")))
                    self._reply(
                        200, {"Content-Type": "application/x-amz-json-1.0"}, payload.encode()
                    )
                    proxy.calls.append((operation, 200))
                    return
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
