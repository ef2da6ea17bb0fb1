"""The real handler behind a loopback ``AWS_IAM`` Function URL, and a client that signs.

``function_url()`` serves ``kv_sync.handler.lambda_handler`` (in this process, with a
``LambdaContext`` of ``timeout_ms``) behind ``SignedFunctionUrl``, which verifies each
request's SigV4 signature as AWS does and builds the payload format 2.0 event. The
yielded ``FunctionUrl`` signs requests the way ``scripts/invoke_url.py`` does, with
the credentials the verifier trusts, and returns each ``Reply``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import requests
from botocore.credentials import ReadOnlyCredentials

from local.lambda_context import LambdaContext
from scripts.invoke_url import sign_request
from tests.support.signed_function_url import SignedFunctionUrl
from tests.support.sigv4 import ACCESS_KEY, REGION, SECRET_KEY, SESSION_TOKEN


@dataclass(frozen=True)
class Reply:
    """What the Function URL answered: status, headers (any case) and the JSON document."""

    status: int
    headers: Any  # requests' case-insensitive mapping
    document: dict[str, Any]


@dataclass
class FunctionUrl:
    """A signing client of the served handler; ``timeout_ms`` is each invocation's limit."""

    url: str = ""
    timeout_ms: int = 30_000

    def post(self, body: dict[str, Any], *, timeout_ms: int | None = None) -> Reply:
        """POST ``body`` as JSON."""
        return self._send("POST", self.url, json.dumps(body).encode(), timeout_ms)

    def get(self, query: dict[str, str], *, timeout_ms: int | None = None) -> Reply:
        """GET with ``query`` as the query string."""
        target = f"{self.url}?{urlencode(query, quote_via=quote, safe='-_.~')}"
        return self._send("GET", target, b"", timeout_ms)

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """What Lambda runs for each request: the real handler."""
        from kv_sync.handler import lambda_handler

        reply: dict[str, Any] = lambda_handler(event, LambdaContext(timeout_ms=self.timeout_ms))
        return reply

    def _send(self, method: str, target: str, body: bytes, timeout_ms: int | None) -> Reply:
        credentials = ReadOnlyCredentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
        headers = sign_request(method, target, body, credentials, REGION)
        previous, self.timeout_ms = self.timeout_ms, timeout_ms or self.timeout_ms
        try:
            response = requests.request(method, target, data=body, headers=headers, timeout=60)
        finally:
            self.timeout_ms = previous
        return Reply(response.status_code, response.headers, response.json())


@contextmanager
def function_url() -> Iterator[FunctionUrl]:
    """The real handler behind a loopback Function URL that checks signatures."""
    client = FunctionUrl()
    with SignedFunctionUrl(client.invoke) as served:
        client.url = served.url
        yield client
    assert served.rejections == [], served.rejections
