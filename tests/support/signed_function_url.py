"""A loopback Lambda Function URL that checks SigV4 signatures and runs a handler.

It plays what AWS does in front of an ``AWS_IAM`` Function URL: the request is
verified with the independent SigV4 verifier of ``tests.support.sigv4``
(403 ``{"Message": "Forbidden"}`` when it fails), turned into a payload format
2.0 event and given to ``invoke``, whose HTTP response is sent back.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.sigv4 import SignatureError, VerifierConfig, verify_sigv4

Invoke = Callable[[dict[str, Any]], dict[str, Any]]
# Bodies Lambda passes as text; any other content type arrives base64-encoded.
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, list[str]]
    body: bytes
    status: int = 0


@dataclass
class SignedFunctionUrl:
    """Serve on a free loopback port while inside ``with``; ``url`` is its address."""

    invoke: Invoke
    config: VerifierConfig = field(default_factory=VerifierConfig)
    url: str = ""
    received: list[Received] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> SignedFunctionUrl:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def event(self, record: Received) -> dict[str, Any]:
        """The Function URL event (payload format 2.0) Lambda would build."""
        path, _, query = record.target.partition("?")
        headers = {name: ",".join(values) for name, values in record.headers.items()}
        content_type = headers.get("content-type", "")
        text = content_type.startswith(_TEXT_TYPES)
        host = headers.get("host", "")
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": path,
            "rawQueryString": query,
            "headers": headers,
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "loopback",
                "domainName": host,
                "http": {
                    "method": record.method,
                    "path": path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1",
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": "$default",
                "stage": "$default",
                "timeEpoch": int(time.time() * 1000),
            },
            "isBase64Encoded": bool(record.body) and not text,
        }
        if query:
            event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
        if record.body:
            event["body"] = (
                record.body.decode("utf-8") if text else base64.b64encode(record.body).decode()
            )
        return event


def _handler_class(state: SignedFunctionUrl) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            record = Received(self.command, self.path, headers, body)
            state.received.append(record)
            try:
                host = headers.get("host", [""])[0]
                if host != urlsplit(state.url).netloc:
                    raise SignatureError(f"unexpected host header {host!r}")
                now = dt.datetime.now(dt.UTC)
                verify_sigv4(state.config, self.command, self.path, headers, body, now)
            except SignatureError as exc:
                state.rejections.append(str(exc))
                self._reply(
                    record, 403, {"content-type": "application/json"}, b'{"Message":"Forbidden"}'
                )
                return
            response = state.invoke(state.event(record))
            payload = response.get("body", "")
            data = (
                base64.b64decode(payload)
                if response.get("isBase64Encoded")
                else str(payload).encode("utf-8")
            )
            self._reply(
                record, int(response.get("statusCode", 200)), response.get("headers") or {}, data
            )

        def _reply(
            self, record: Received, status: int, headers: dict[str, str], data: bytes
        ) -> None:
            record.status = status
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _handle
        do_POST = _handle
        do_PUT = _handle
        do_DELETE = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def document_of(body: str) -> Any:
    """The JSON document of a reply body."""
    return json.loads(body)
