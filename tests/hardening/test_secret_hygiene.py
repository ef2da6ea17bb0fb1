"""Secret hygiene beyond the fault matrix: tokens that end up inside exceptions.

The fault and hostile-input matrices already assert, case by case, that the token and
the whole secret string appear in no log line, metric document, reply or trace data.
These tests put the token *into* an exception's text, the way a third-party library or
an upstream error page could, and check that it is redacted on its way out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.hardening.conftest import Probe
from tests.integration.conftest import TOKEN, Stack


@pytest.fixture
def synced(stack: Stack, probe: Probe, fast_retries: None) -> Stack:
    stack.emulator.put(stack.namespace_id, "flag", "on")
    assert stack.invoke({"key_name": "flag"})["success"] is True
    stack.emulator.reset_stats()
    probe.reset()
    return stack


def _secret_string(stack: Stack) -> str:
    value: str = stack.secrets.get_secret_value(SecretId=stack.secret)["SecretString"]
    return value


def test_successful_and_retried_syncs_log_no_secret(synced: Stack, probe: Probe):
    # a 401 makes the function re-read the secret; retries log warnings; DEBUG is on
    synced.emulator.add_fault(status=401, times=1, path_contains="/bulk/get")
    synced.emulator.add_fault(status=503, times=1, path_contains="/bulk/get")
    import credentials

    credentials.reset_cache()

    outcome = probe.invoke(synced, {"key_name": "flag"})

    assert outcome.document["success"] is True
    assert probe.log_records(), "no log line was captured"
    probe.assert_no_secrets(TOKEN, _secret_string(synced))


def test_credentials_repr_hides_the_token(synced: Stack):
    from config import load_settings
    from credentials import load_credentials

    creds = load_credentials(load_settings())
    assert creds.api_token == TOKEN
    assert TOKEN not in repr(creds) and TOKEN not in str(creds)


def test_token_inside_an_unexpected_exception_is_redacted(
    synced: Stack, probe: Probe, monkeypatch: pytest.MonkeyPatch
):
    # GIVEN an HTTP layer that fails with the request's headers in its message
    import cloudflare

    def failing_request(method: str, url: str, headers: dict[str, str], **kwargs: Any) -> Any:
        raise RuntimeError(f"adapter failed for {method} {url} with headers {headers}")

    monkeypatch.setattr(cloudflare.SESSION, "request", failing_request)

    # WHEN the key is synced
    outcome = probe.invoke(synced, {"key_name": "flag"})

    # THEN it is an internal error, traced with its exception, and the token is nowhere
    assert outcome.document["error"]["type"] == "INTERNAL_ERROR"
    assert any("cause" in doc for doc in probe.trace_documents())
    probe.assert_no_secrets(TOKEN)


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
    synced: Stack, probe: Probe, echoing_cloudflare: str, monkeypatch: pytest.MonkeyPatch
):
    # Cloudflare's real answer to a bad token is 403, code 9109 "Invalid access token"
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", echoing_cloudflare)

    outcome = probe.invoke(synced, {"key_name": "flag"})

    assert outcome.document["error"]["type"] == "AUTH_ERROR"
    probe.assert_no_secrets(TOKEN)


def test_token_with_a_line_break_does_not_leak(synced: Stack, probe: Probe):
    # a token pasted with an embedded newline makes the header invalid before sending
    import credentials

    bad_token = "pasted-token\nsecond-line-Zx81"
    secret = json.loads(_secret_string(synced))
    synced.secrets.put_secret_value(
        SecretId=synced.secret, SecretString=json.dumps({**secret, "api_token": bad_token})
    )
    credentials.reset_cache()

    outcome = probe.invoke(synced, {"key_name": "flag"})

    assert outcome.document["error"]["type"] in {"CONFIGURATION_ERROR", "NETWORK_ERROR"}
    assert synced.emulator.requests == []  # never sent
    probe.assert_no_secrets(bad_token, "second-line-Zx81")
