"""Secret hygiene beyond the fault matrix: tokens that end up inside exceptions.

The fault and hostile-input matrices already check, case by case, that the token and
the whole secret string appear in no log line, metric document, reply or X-Ray
document. These tests put the token *into* an exception's text, the way a third-party
library or an upstream error page could, and check that it is redacted on its way out:
in the reply, in every log line, and in the X-Ray documents the function sends (run as
in Lambda, with active tracing, in ``tests.support.traced``), recorded exceptions
(``cause.exceptions[].message``) included.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.stack import TOKEN, Stack
from tests.support.traced import Outcome, TracedFunction


@pytest.fixture
def synced(stack: Stack, traced: TracedFunction) -> Stack:
    """A key synced once by the traced container, which is then warm."""
    stack.emulator.put(stack.namespace_id, "flag", "on")
    first = traced.invoke({"key_name": "flag"}, env=stack.env())
    assert first.document["success"] is True, first.output[-2000:]
    stack.emulator.reset_stats()
    return stack


def assert_recorded_and_redacted(outcome: Outcome, *secret_values: str) -> None:
    """The trace recorded the failure's exception, with its message redacted."""
    messages = [exc.get("message", "") for exc in outcome.exceptions().values()]
    assert messages, "the trace recorded no exception"
    assert any("[REDACTED]" in message for message in messages), messages
    outcome.assert_no_secrets(*secret_values)


def test_successful_and_retried_syncs_emit_no_secret(synced: Stack, traced: TracedFunction):
    # GIVEN a 401 (the function re-reads the secret) and a 503 (retried, with a warning)
    synced.emulator.add_fault(status=401, times=1, path_contains="/bulk/get")
    synced.emulator.add_fault(status=503, times=1, path_contains="/bulk/get")

    # WHEN a cold container syncs the key, logging at DEBUG
    outcome = traced.invoke({"key_name": "flag"}, env=synced.env(), reset=True)

    # THEN it succeeded, and neither the token nor the secret is anywhere
    assert outcome.document["success"] is True
    assert outcome.log_records(), "no log line was captured"
    assert {"## secrets.read", "## cloudflare.fetch"} <= outcome.names()
    outcome.assert_traced()
    outcome.assert_no_secrets(TOKEN, synced.secret_string())


def test_credentials_repr_hides_the_token(synced: Stack):
    # GIVEN the credentials the function loads
    from kv_sync.credentials import load_credentials
    from kv_sync.settings import load_settings

    creds = load_credentials(load_settings())

    # THEN their text forms never show the token
    assert creds.api_token == TOKEN
    assert TOKEN not in repr(creds) and TOKEN not in str(creds)


def test_token_inside_an_unexpected_exception_is_redacted(synced: Stack, traced: TracedFunction):
    # GIVEN an HTTP layer that fails with the request's headers in its message
    # WHEN the key is synced
    outcome = traced.invoke(
        {"key_name": "flag"}, env=synced.env(), sabotage="session-error-quoting-headers"
    )

    # THEN it is an internal error, traced with its exception, and the token is nowhere
    assert outcome.document["error"]["type"] == "INTERNAL_ERROR"
    assert any(record.get("message") == "Unexpected failure" for record in outcome.log_records()), (
        outcome.output[-2000:]
    )
    assert_recorded_and_redacted(outcome, TOKEN)


class _EchoingCloudflare(BaseHTTPRequestHandler):
    """An upstream that quotes the Authorization header back in its error message."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.do_POST()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps(
            {
                "success": False,
                "errors": [{"code": 9109, "message": f"Invalid access token {token}"}],
                "messages": [],
                "result": None,
            }
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echoing_cloudflare() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingCloudflare)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/client/v4"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_token_echoed_by_an_upstream_error_is_redacted(
    synced: Stack, traced: TracedFunction, echoing_cloudflare: str
):
    # GIVEN Cloudflare's real answer to a bad token: 403, code 9109 "Invalid access
    # token", here quoting the token back
    env = {**synced.env(), "CLOUDFLARE_API_BASE_URL": echoing_cloudflare}

    # WHEN the key is synced
    outcome = traced.invoke({"key_name": "flag"}, env=env)

    # THEN AUTH_ERROR, with the quoted token redacted everywhere, the trace included
    assert outcome.document["error"]["type"] == "AUTH_ERROR"
    assert "Invalid access token [REDACTED]" in outcome.document["error"]["message"]
    assert_recorded_and_redacted(outcome, TOKEN)


def test_token_quoted_by_an_upstream_error_on_retry_is_redacted(
    synced: Stack, traced: TracedFunction, echoing_cloudflare: str
):
    # GIVEN a rotated secret, and an upstream quoting each token it refuses
    synced.put_secret("rotated-token-Qw7e9Rt2")
    env = {**synced.env(), "CLOUDFLARE_API_BASE_URL": echoing_cloudflare}

    # WHEN the warm container syncs (refused with the cached token, then the new one)
    outcome = traced.invoke({"key_name": "flag"}, env=env)

    # THEN neither token shows anywhere
    assert outcome.document["error"]["type"] == "AUTH_ERROR"
    assert_recorded_and_redacted(outcome, TOKEN, "rotated-token-Qw7e9Rt2")


def test_token_with_a_line_break_does_not_leak(synced: Stack, traced: TracedFunction):
    # GIVEN a token pasted with an embedded newline, which makes an invalid header
    bad_token = "pasted-token\nsecond-line-Zx81"
    secret = json.loads(synced.secret_string())
    synced.put_raw_secret(json.dumps({**secret, "api_token": bad_token}))

    # WHEN a cold container syncs the key
    outcome = traced.invoke({"key_name": "flag"}, env=synced.env(), reset=True)

    # THEN it is refused before anything is sent, and no part of the token shows
    assert outcome.document["error"]["type"] in {"CONFIGURATION_ERROR", "NETWORK_ERROR"}
    assert synced.emulator.requests == []
    outcome.assert_no_secrets(bad_token, "second-line-Zx81", "pasted-token")
