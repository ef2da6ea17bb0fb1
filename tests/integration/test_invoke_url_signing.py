"""The Function URL client's SigV4 signatures, checked by an independent verifier.

A loopback ``http.server`` plays the Lambda Function URL: it recomputes the SigV4
signature from the raw request it received with ``tests.support.sigv4`` (only
``hashlib``/``hmac`` and the AWS Signature Version 4 specification), and answers 403
unless it matches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pytest
import requests
from botocore.credentials import ReadOnlyCredentials

from scripts.invoke_url import main, sign_request
from tests.support.sigv4 import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    SESSION_TOKEN,
    SignatureError,
    VerifierConfig,
    verify_sigv4,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# ---------------------------------------------------------------------------
# Loopback Function URL
# ---------------------------------------------------------------------------


@dataclass
class FakeFunctionUrl:
    """State shared with the request handler thread."""

    config: VerifierConfig = field(default_factory=VerifierConfig)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    document: dict[str, Any] | None = None  # overrides the success document
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)


def _make_handler(state: FakeFunctionUrl) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            state.received.append(
                {"method": self.command, "target": self.path, "headers": headers, "body": body}
            )
            try:
                host = headers.get("host", [""])[0]
                if host != urlsplit(state.url).netloc:
                    raise SignatureError(f"unexpected host header {host!r}")
                verify_sigv4(state.config, self.command, self.path, headers, body, state.clock())
            except SignatureError as exc:
                state.rejections.append(str(exc))
                self._reply(403, {"message": "Forbidden"})
                return
            document = state.document or {
                "success": True,
                "data": {
                    "method": self.command,
                    "query": urlsplit(self.path).query,
                    "body": json.loads(body) if body else None,
                },
            }
            self._reply(200, document)

        def _reply(self, status: int, document: dict[str, Any]) -> None:
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _handle
        do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@pytest.fixture
def function_url() -> Iterator[FakeFunctionUrl]:
    state = FakeFunctionUrl()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def caller_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's credential chain yields the verifier's key pair and session token."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)


def _credentials(secret: str = SECRET_KEY, token: str | None = SESSION_TOKEN) -> Any:
    return ReadOnlyCredentials(ACCESS_KEY, secret, token)


def _post(url: str, signed_body: bytes, sent_body: bytes, credentials: Any) -> requests.Response:
    headers = sign_request("POST", url, signed_body, credentials, REGION)
    return requests.post(url, data=sent_body, headers=headers, timeout=10)


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("caller_credentials")
def test_cli_post_with_valid_signature_succeeds_and_prints_document(
    function_url: FakeFunctionUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the fake Function URL trusts the caller's credentials
    # WHEN the CLI syncs a prefix
    code = main([function_url.url, "--prefix", "flags/", "--delete-missing", "--region", REGION])

    # THEN the verifier accepted the signature and the document is printed
    assert function_url.rejections == []
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "success": True,
        "data": {
            "method": "POST",
            "query": "",
            "body": {"prefix": "flags/", "delete_missing": True},
        },
    }
    # AND the session token travelled as x-amz-security-token, JSON typed
    headers = function_url.received[0]["headers"]
    assert headers["x-amz-security-token"] == [SESSION_TOKEN]
    assert headers["content-type"] == ["application/json"]


@pytest.mark.usefixtures("caller_credentials")
def test_cli_without_selector_posts_empty_object(
    function_url: FakeFunctionUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN no key selector
    # WHEN the CLI is run
    code = main([function_url.url, "--region", REGION])

    # THEN it signed and sent "{}"
    assert code == 0
    assert function_url.received[0]["body"] == b"{}"
    assert json.loads(capsys.readouterr().out)["data"]["body"] == {}


@pytest.mark.usefixtures("caller_credentials")
def test_cli_get_signs_percent_encoded_query(
    function_url: FakeFunctionUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a key name needing percent-encoding (space, slash, plus, non-ASCII)
    key = "flags/a b+c é"

    # WHEN the CLI uses GET
    code = main([function_url.url, "--method", "GET", "--key-name", key, "--region", REGION])

    # THEN the verifier's own canonical query matches the signed one
    assert function_url.rejections == []
    assert code == 0
    query = json.loads(capsys.readouterr().out)["data"]["query"]
    assert unquote(query) == f"key_name={key}"
    assert function_url.received[0]["body"] == b""


def test_tampered_body_is_rejected(function_url: FakeFunctionUrl) -> None:
    # GIVEN a request signed for one body
    signed = json.dumps({"key_name": "harmless"}).encode()
    sent = json.dumps({"all": True, "delete_missing": True}).encode()

    # WHEN another body is sent with those headers
    response = _post(function_url.url, signed, sent, _credentials())

    # THEN the verifier rejects it
    assert response.status_code == 403
    assert response.json() == {"message": "Forbidden"}
    assert function_url.rejections == ["x-amz-content-sha256 does not match the body"]


def test_tampered_body_with_forged_hash_header_fails_signature(
    function_url: FakeFunctionUrl,
) -> None:
    # GIVEN a signed request whose x-amz-content-sha256 is rewritten to match a new body
    signed = b'{"key_name": "a"}'
    sent = b'{"key_name": "b"}'
    headers = sign_request("POST", function_url.url, signed, _credentials(), REGION)
    headers["X-Amz-Content-SHA256"] = hashlib.sha256(sent).hexdigest()

    # WHEN the new body is sent
    response = requests.post(function_url.url, data=sent, headers=headers, timeout=10)

    # THEN the recomputed signature (over header and body hash) does not match
    assert response.status_code == 403
    assert function_url.rejections == ["signature mismatch"]


def test_untampered_request_from_importable_functions_is_accepted(
    function_url: FakeFunctionUrl,
) -> None:
    # GIVEN a body signed and sent unchanged
    body = b'{"key_names": ["a", "b"]}'

    # WHEN it is posted
    response = _post(function_url.url, body, body, _credentials())

    # THEN it is accepted
    assert response.status_code == 200
    assert response.json()["data"]["body"] == {"key_names": ["a", "b"]}


def test_wrong_secret_key_is_rejected(function_url: FakeFunctionUrl) -> None:
    # GIVEN credentials with the right access key but the wrong secret
    body = b"{}"

    # WHEN a request signed with them is sent
    response = _post(function_url.url, body, body, _credentials(secret="not-the-secret"))

    # THEN the signature does not verify
    assert response.status_code == 403
    assert function_url.rejections == ["signature mismatch"]


def test_missing_session_token_is_rejected(function_url: FakeFunctionUrl) -> None:
    # GIVEN the server expects temporary credentials, the caller sends none
    response = _post(function_url.url, b"{}", b"{}", _credentials(token=None))

    # THEN the request is refused
    assert response.status_code == 403
    assert function_url.rejections == ["session token missing"]


def test_long_term_credentials_send_no_session_token(function_url: FakeFunctionUrl) -> None:
    # GIVEN long-term credentials (no session token) and a server expecting none
    function_url.config = VerifierConfig(session_token=None)

    # WHEN a request is signed and sent
    response = _post(function_url.url, b"{}", b"{}", _credentials(token=None))

    # THEN it is accepted and no token header was sent
    assert response.status_code == 200
    assert "x-amz-security-token" not in function_url.received[0]["headers"]


def test_wrong_region_is_rejected(function_url: FakeFunctionUrl) -> None:
    # GIVEN a request signed for another region
    headers = sign_request("POST", function_url.url, b"{}", _credentials(), "eu-west-1")

    # WHEN it is sent
    response = requests.post(function_url.url, data=b"{}", headers=headers, timeout=10)

    # THEN the credential scope is refused
    assert response.status_code == 403
    assert function_url.rejections == ["wrong scope eu-west-1/lambda/aws4_request"]


def test_stale_signature_is_rejected(function_url: FakeFunctionUrl) -> None:
    # GIVEN the server clock is ten minutes ahead of the signer's
    function_url.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)

    # WHEN a freshly signed request arrives
    response = _post(function_url.url, b"{}", b"{}", _credentials())

    # THEN it is outside the 5-minute window
    assert response.status_code == 403
    assert function_url.rejections == ["x-amz-date is more than 5 minutes from the server clock"]


@pytest.mark.usefixtures("caller_credentials")
def test_cli_exits_nonzero_on_403(
    function_url: FakeFunctionUrl,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN the caller's chain holds the wrong secret
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")

    # WHEN the CLI is run
    code = main([function_url.url, "--key-name", "k", "--region", REGION])

    # THEN it exits 1, prints the 403 document and one error line, no secrets
    assert code == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"message": "Forbidden"}
    assert captured.err == "error: HTTP 403: Forbidden\n"
    for secret in ("wrong-secret", SESSION_TOKEN):
        assert secret not in captured.out + captured.err


@pytest.mark.usefixtures("caller_credentials")
def test_cli_exits_nonzero_when_function_reports_failure(
    function_url: FakeFunctionUrl, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a validly signed call whose function run fails
    function_url.document = {"success": False, "error": "KV namespace not found"}

    # WHEN the CLI is run
    code = main([function_url.url, "--all", "--region", REGION])

    # THEN the signature was fine but the CLI exits 1 with the reason
    assert function_url.rejections == []
    assert code == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["success"] is False
    assert captured.err == "error: the function reported failure: KV namespace not found\n"


def test_verifier_accepts_the_aws_documented_example() -> None:
    # GIVEN the "get-vanilla" request from the AWS SigV4 test suite
    config = VerifierConfig(
        access_key="AKIDEXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token=None,
        service="service",
    )
    headers = {
        "host": ["example.amazonaws.com"],
        "x-amz-date": ["20150830T123600Z"],
        "authorization": [
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, "
            "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        ],
    }
    now = dt.datetime(2015, 8, 30, 12, 36, tzinfo=dt.UTC)

    # WHEN it is verified
    # THEN no error is raised (the verifier implements the spec, not botocore's quirks)
    verify_sigv4(config, "GET", "/", headers, b"", now)

    # AND a one-character change in the signature is rejected
    headers["authorization"] = [headers["authorization"][0][:-1] + "0"]
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify_sigv4(config, "GET", "/", headers, b"", now)
