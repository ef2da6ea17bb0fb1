"""Unit tests for ``scripts/invoke_url.py``, the signed Function URL client."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import requests
import responses
from botocore.credentials import ReadOnlyCredentials

from scripts.invoke_url import build_body, build_parser, main, region_from_url, sign_request

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

URL = "https://abc123xyz.lambda-url.eu-west-1.on.aws/"
OK_DOC = {"success": True, "data": {"synced": 1}}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def _body(*argv: str) -> dict[str, object]:
    return build_body(build_parser().parse_args([URL, *argv]))


def _scope(call: responses.Call) -> list[str]:
    auth = str(call.request.headers["Authorization"])
    credential = auth.split("Credential=")[1].split(",")[0]
    return credential.split("/")


# --- body building -----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), {}),
        (("--key-name", "k1"), {"key_name": "k1"}),
        (("--key-names", "a", "b"), {"key_names": ["a", "b"]}),
        (("--prefix", "flags/"), {"prefix": "flags/"}),
        (("--all",), {"all": True}),
        (("--prefix", "p", "--cursor", "c1"), {"prefix": "p", "cursor": "c1"}),
        (("--all", "--delete-missing"), {"all": True, "delete_missing": True}),
        (("--all", "--no-delete-missing"), {"all": True, "delete_missing": False}),
    ],
)
def test_build_body_for_each_selector(argv: tuple[str, ...], expected: dict[str, object]) -> None:
    # GIVEN command-line selectors
    # WHEN the body is built
    body = _body(*argv)

    # THEN only the given fields appear
    assert body == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--key-name", "a", "--prefix", "p"],
        ["--key-names", "a", "--all"],
        ["--prefix", "p", "--all"],
        ["--key-name", "a", "--key-names", "b"],
    ],
)
def test_selectors_are_mutually_exclusive(
    argv: list[str], capsys: pytest.CaptureFixture[str], rsps: responses.RequestsMock
) -> None:
    # GIVEN two selectors at once
    # WHEN the CLI parses them
    code = main([URL, *argv])

    # THEN it is a usage error and nothing is sent
    assert code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert len(rsps.calls) == 0


# --- region ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://abc123.lambda-url.eu-west-1.on.aws/", "eu-west-1"),
        ("https://ABC123.LAMBDA-URL.ap-southeast-2.ON.AWS", "ap-southeast-2"),
        ("https://abc123.lambda-url.us-gov-west-1.on.aws/path", "us-gov-west-1"),
        ("https://example.com/", None),
        ("http://127.0.0.1:8080/", None),
    ],
)
def test_region_from_url(url: str, region: str | None) -> None:
    # GIVEN a URL / WHEN its region is parsed / THEN only Function URL hosts yield one
    assert region_from_url(url) == region


def test_signing_region_comes_from_url_before_session(rsps: responses.RequestsMock) -> None:
    # GIVEN the session's default region (us-east-1, from conftest) differs from the URL's
    rsps.post(URL, json=OK_DOC)

    # WHEN the CLI runs without --region
    assert main([URL]) == 0

    # THEN the function's own region (eu-west-1) is signed for the lambda service
    assert _scope(rsps.calls[0])[2:] == ["eu-west-1", "lambda", "aws4_request"]


def test_explicit_region_wins(rsps: responses.RequestsMock) -> None:
    # GIVEN --region
    rsps.post(URL, json=OK_DOC)

    # WHEN the CLI runs
    assert main([URL, "--region", "us-west-2"]) == 0

    # THEN that region is signed
    assert _scope(rsps.calls[0])[2] == "us-west-2"


def test_session_region_used_for_custom_domain(rsps: responses.RequestsMock) -> None:
    # GIVEN a URL whose host names no region
    url = "https://sync.example.com/"
    rsps.post(url, json=OK_DOC)

    # WHEN the CLI runs
    assert main([url]) == 0

    # THEN the session's region is used
    assert _scope(rsps.calls[0])[2] == "us-east-1"


def test_no_region_anywhere_is_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN no --region, no region in the URL, no configured region
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))

    # WHEN the CLI runs
    code = main(["https://sync.example.com/"])

    # THEN it is a usage error
    assert code == 2
    assert "--region" in capsys.readouterr().err


# --- request shape -----------------------------------------------------------


def test_post_sends_signed_json(rsps: responses.RequestsMock) -> None:
    # GIVEN a successful function
    rsps.post(URL, json=OK_DOC)

    # WHEN keys are synced
    assert main([URL, "--key-names", "a", "b", "--cursor", "c"]) == 0

    # THEN the body is JSON and carries SigV4 headers with the session token
    request = rsps.calls[0].request
    assert json.loads(request.body or b"") == {"key_names": ["a", "b"], "cursor": "c"}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert request.headers["X-Amz-Security-Token"] == "testing"
    assert "X-Amz-Date" in request.headers


def test_get_sends_key_name_query(rsps: responses.RequestsMock) -> None:
    # GIVEN GET with a key name needing encoding
    rsps.get(URL, json=OK_DOC)

    # WHEN the CLI runs
    assert main([URL, "--method", "get", "--key-name", "a b/c"]) == 0

    # THEN the key travels percent-encoded in the query, with no body
    request = rsps.calls[0].request
    assert request.url == URL + "?key_name=a%20b%2Fc"
    assert not request.body


@pytest.mark.parametrize(
    "argv", [["--prefix", "p"], ["--all"], ["--key-name", "k", "--cursor", "c"]]
)
def test_get_accepts_only_key_name(
    argv: list[str], capsys: pytest.CaptureFixture[str], rsps: responses.RequestsMock
) -> None:
    # GIVEN GET with a selector other than --key-name
    # WHEN the CLI runs
    code = main([URL, "--method", "GET", *argv])

    # THEN it is a usage error
    assert code == 2
    assert "GET only supports --key-name" in capsys.readouterr().err


def test_sign_request_headers() -> None:
    # GIVEN temporary credentials and a body
    credentials = ReadOnlyCredentials("AKID", "SECRET", "TOKEN")

    # WHEN the request is signed
    headers = sign_request("POST", URL, b"{}", credentials, "eu-west-1")

    # THEN the headers to send carry the signature, date, token and body hash
    assert set(headers) == {
        "Authorization",
        "X-Amz-Date",
        "X-Amz-Security-Token",
        "X-Amz-Content-SHA256",
        "Content-Type",
    }
    assert "/eu-west-1/lambda/aws4_request" in headers["Authorization"]
    assert (
        "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;"
        in (headers["Authorization"])
    )
    assert "SECRET" not in json.dumps(headers)


def test_sign_request_without_token_or_body() -> None:
    # GIVEN long-term credentials and an empty body
    headers = sign_request(
        "GET", URL, b"", ReadOnlyCredentials("AKID", "SECRET", None), "eu-west-1"
    )

    # THEN no token or content type is sent
    assert "X-Amz-Security-Token" not in headers
    assert "Content-Type" not in headers


# --- exit codes and output ---------------------------------------------------


def test_success_prints_pretty_json(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the function reports success
    rsps.post(URL, json=OK_DOC)

    # WHEN the CLI runs
    code = main([URL])

    # THEN it exits 0 with the indented document on stdout and nothing on stderr
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out == json.dumps(OK_DOC, indent=2) + "\n"
    assert captured.err == ""


@pytest.mark.parametrize(
    ("status", "document", "message"),
    [
        (200, {"success": False, "error": "boom"}, "error: the function reported failure: boom\n"),
        (200, {"data": {}}, "error: the function reported failure\n"),
        (200, ["not", "an", "object"], "error: the function reported failure\n"),
        (403, {"message": "Forbidden"}, "error: HTTP 403: Forbidden\n"),
        (500, {"success": True}, "error: HTTP 500\n"),
    ],
)
def test_function_failure_exits_1(
    status: int,
    document: object,
    message: str,
    rsps: responses.RequestsMock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a failing response
    rsps.post(URL, json=document, status=status)

    # WHEN the CLI runs
    code = main([URL])

    # THEN it exits 1, still prints the document, and explains in one line
    captured = capsys.readouterr()
    assert code == 1
    assert json.loads(captured.out) == document
    assert captured.err == message


def test_non_json_response_exits_1(
    rsps: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a gateway error page
    rsps.post(URL, body="<html>\n Bad   Gateway\n</html>", status=502)

    # WHEN the CLI runs
    code = main([URL])

    # THEN it exits 1 with a single-line message
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert captured.err == "error: HTTP 502, response is not JSON: <html> Bad Gateway </html>\n"


@pytest.mark.parametrize("error", [requests.ConnectionError("refused"), requests.Timeout("slow")])
def test_transport_error_exits_3(
    error: Exception, rsps: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the request cannot complete
    rsps.post(URL, body=error)

    # WHEN the CLI runs
    code = main([URL, "--timeout", "5"])

    # THEN it exits 3 with one line on stderr
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err.startswith("error: request failed: ")
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["http://abc.lambda-url.eu-west-1.on.aws/"], "must use https"),
        (["ftp://127.0.0.1/"], "must use https"),
        (["not-a-url"], "not an absolute URL"),
        ([URL + "?key_name=x"], "query string"),
        ([URL, "--timeout", "0"], "--timeout must be positive"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], rsps: responses.RequestsMock
) -> None:
    # GIVEN an unusable URL or option
    # WHEN the CLI runs
    code = main(argv)

    # THEN it exits 2 without sending anything
    assert code == 2
    assert message in capsys.readouterr().err
    assert len(rsps.calls) == 0


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN --help / WHEN run / THEN usage is printed and the exit code is 0
    assert main(["--help"]) == 0
    assert "--key-names" in capsys.readouterr().out


# --- credentials -------------------------------------------------------------


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Empty every source in botocore's credential chain, IMDS included."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "missing-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "missing-config"))
    monkeypatch.setenv("BOTO_CONFIG", str(tmp_path / "missing-boto"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_credentials")
def test_no_credentials_exits_3(
    capsys: pytest.CaptureFixture[str], rsps: responses.RequestsMock
) -> None:
    # GIVEN an empty credential chain
    # WHEN the CLI runs
    code = main([URL])

    # THEN it exits 3 with a clean one-line message, no traceback, nothing sent
    captured = capsys.readouterr()
    assert code == 3
    assert captured.err == (
        "error: no AWS credentials found (configure a profile or AWS_* variables)\n"
    )
    assert captured.out == ""
    assert len(rsps.calls) == 0


@pytest.mark.usefixtures("no_credentials")
def test_unknown_profile_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a profile that does not exist
    # WHEN the CLI runs with it
    code = main([URL, "--profile", "nope"])

    # THEN it exits 3 naming the problem
    assert code == 3
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load AWS credentials: ")
    assert "nope" in err


def test_credentials_never_printed(
    monkeypatch: pytest.MonkeyPatch,
    rsps: responses.RequestsMock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN distinctive credentials and a rejected call
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "very-secret-token")
    rsps.post(URL, json={"message": "Forbidden"}, status=403)

    # WHEN the CLI runs
    main([URL])

    # THEN neither secret appears in its output
    captured = capsys.readouterr()
    for secret in ("very-secret-value", "very-secret-token"):
        assert secret not in captured.out + captured.err
