"""Call the kv-sync Lambda Function URL with a SigV4-signed HTTP request.

The Function URL uses ``AWS_IAM`` auth, so every request must be signed with the
caller's AWS credentials for the ``lambda`` service. Credentials and region come
from the normal AWS chain (environment, profile, SSO, instance role, ...).

Examples
--------
Sync the function's default key::

    python scripts/invoke_url.py https://abc123.lambda-url.eu-west-1.on.aws/

Sync every key under a prefix, deleting DynamoDB items that vanished from KV::

    python scripts/invoke_url.py URL --prefix flags/ --delete-missing

Exit codes: 0 success, 1 failure reported by the function (non-2xx or
``success`` not true), 2 usage error, 3 transport error or no credentials.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import re
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import boto3
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError

if TYPE_CHECKING:
    from botocore.credentials import Credentials, ReadOnlyCredentials

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TRANSPORT = 3

SERVICE = "lambda"
DEFAULT_TIMEOUT_SECONDS = 300.0
_FUNCTION_URL_HOST = re.compile(r"^[a-z0-9]+\.lambda-url\.([a-z0-9-]+)\.on\.aws$")
_LOOPBACK_NAMES = frozenset({"localhost"})
_MAX_ERROR_TEXT = 200


class CliError(Exception):
    """Stop the command with an exit code and a one-line message."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError, ValueError):
    """The command line or URL cannot be turned into a request."""

    exit_code = EXIT_USAGE


class TransportError(CliError):
    """No credentials, or the request could not be sent or answered."""

    exit_code = EXIT_TRANSPORT


def build_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns
    -------
    argparse.ArgumentParser
        Parser with mutually exclusive key selectors.
    """
    parser = argparse.ArgumentParser(
        prog="invoke_url.py",
        description="Invoke the kv-sync Lambda Function URL with a SigV4-signed request.",
    )
    parser.add_argument("url", help="Function URL, https://<id>.lambda-url.<region>.on.aws/")
    selector = parser.add_mutually_exclusive_group()
    selector.add_argument("--key-name", help="sync one KV key")
    selector.add_argument("--key-names", nargs="+", metavar="KEY", help="sync these KV keys")
    selector.add_argument("--prefix", help="sync every KV key starting with PREFIX")
    selector.add_argument("--all", action="store_true", help="sync every key in the namespace")
    parser.add_argument("--cursor", help="KV list cursor to resume a prefix/all sync from")
    parser.add_argument(
        "--delete-missing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="delete DynamoDB items whose key no longer exists in KV",
    )
    parser.add_argument("--method", choices=("POST", "GET"), default="POST", type=str.upper)
    parser.add_argument("--region", help="signing region (default: from the URL, else profile)")
    parser.add_argument("--profile", help="AWS profile to take credentials from")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"HTTP timeout in seconds (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    return parser


def build_body(args: argparse.Namespace) -> dict[str, Any]:
    """Turn parsed arguments into the JSON document the function expects.

    Parameters
    ----------
    args : argparse.Namespace
        Result of :func:`build_parser` parsing.

    Returns
    -------
    dict
        Only the fields that were given; ``{}`` means "sync the default key".
    """
    body: dict[str, Any] = {}
    if args.key_name is not None:
        body["key_name"] = args.key_name
    elif args.key_names is not None:
        body["key_names"] = list(args.key_names)
    elif args.prefix is not None:
        body["prefix"] = args.prefix
    elif args.all:
        body["all"] = True
    if args.cursor is not None:
        body["cursor"] = args.cursor
    if args.delete_missing is not None:
        body["delete_missing"] = bool(args.delete_missing)
    return body


def region_from_url(url: str) -> str | None:
    """Extract the region from a ``<id>.lambda-url.<region>.on.aws`` host.

    Parameters
    ----------
    url : str
        Function URL.

    Returns
    -------
    str or None
        The region, or None when the host is not a Function URL host.
    """
    host = (urlsplit(url).hostname or "").lower()
    match = _FUNCTION_URL_HOST.match(host)
    return match.group(1) if match else None


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_url(url: str) -> None:
    """Reject URLs the client must not send signed requests to.

    Parameters
    ----------
    url : str
        Function URL; must be https, or http to a loopback address (tests).

    Raises
    ------
    UsageError
        When the scheme, host or form of the URL is unusable.
    """
    parts = urlsplit(url)
    if not parts.hostname:
        raise UsageError(f"not an absolute URL: {url!r}")
    secure = parts.scheme == "https"
    if not secure and not (parts.scheme == "http" and _is_loopback(parts.hostname)):
        raise UsageError("the URL must use https (plain http is only allowed for loopback)")
    if parts.query or parts.fragment:
        raise UsageError("the URL must not carry a query string or fragment")


def request_url(url: str, method: str, body: dict[str, Any]) -> str:
    """Build the URL to sign and send, adding ``?key_name=`` for GET.

    Parameters
    ----------
    url : str
        Validated Function URL.
    method : str
        ``POST`` or ``GET``.
    body : dict
        Output of :func:`build_body`.

    Returns
    -------
    str
        The URL, with a SigV4-encoded query string for GET.

    Raises
    ------
    UsageError
        When GET is combined with anything but ``--key-name``.
    """
    parts = urlsplit(url)
    path = parts.path or "/"
    query = ""
    if method == "GET":
        extra = sorted(set(body) - {"key_name"})
        if extra:
            raise UsageError(f"--method GET only supports --key-name (got {', '.join(extra)})")
        if "key_name" in body:
            query = "key_name=" + quote(str(body["key_name"]), safe="-_.~")
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def sign_request(
    method: str,
    url: str,
    body: bytes,
    credentials: Credentials | ReadOnlyCredentials,
    region: str,
) -> dict[str, str]:
    """Sign a Function URL request with SigV4 for the ``lambda`` service.

    Parameters
    ----------
    method : str
        HTTP method.
    url : str
        Full URL including any (already percent-encoded) query string.
    body : bytes
        Exact bytes that will be sent; their SHA-256 is signed.
    credentials : botocore credentials
        Access key, secret key and optional session token.
    region : str
        Signing region of the function.

    Returns
    -------
    dict of str to str
        Headers to send: ``Authorization``, ``X-Amz-Date``,
        ``X-Amz-Content-SHA256``, ``X-Amz-Security-Token`` (when there is a
        session token) and ``Content-Type`` (when there is a body).
    """
    headers = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    if body:
        headers["Content-Type"] = "application/json"
    request = AWSRequest(method=method.upper(), url=url, data=body, headers=headers)
    SigV4Auth(credentials, SERVICE, region).add_auth(request)
    return {str(name): str(value) for name, value in request.headers.items()}


def _resolve_region(explicit: str | None, session: Any, url: str) -> str:
    region = explicit or region_from_url(url) or session.region_name
    if not region:
        raise UsageError(
            "cannot tell the signing region: pass --region, use a "
            "<id>.lambda-url.<region>.on.aws URL or configure a default region"
        )
    return str(region)


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_ERROR_TEXT else flat[:_MAX_ERROR_TEXT] + "..."


def _report(response: requests.Response) -> None:
    """Print the response document; raise CliError unless it reports success."""
    status = response.status_code
    try:
        document: Any = response.json()
    except ValueError:
        raise CliError(f"HTTP {status}, response is not JSON: {_one_line(response.text)}") from None
    print(json.dumps(document, indent=2, ensure_ascii=False))
    fields = document if isinstance(document, dict) else {}
    if not 200 <= status < 300:
        # Our documents say "message"; Lambda's own refusals (a 403) say "Message".
        detail = str(fields.get("message") or fields.get("Message") or fields.get("error") or "")
        raise CliError(f"HTTP {status}" + (f": {_one_line(detail)}" if detail else ""))
    if fields.get("success") is not True:
        detail = str(fields.get("error") or "")
        suffix = f": {_one_line(detail)}" if detail else ""
        raise CliError(f"the function reported failure{suffix}")


def _load_credentials(session: Any) -> Any:
    """Frozen credentials from the session's chain; TransportError when there are none."""
    try:
        credentials = session.get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except BotoCoreError as exc:
        raise TransportError(f"cannot load AWS credentials: {exc}") from None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise TransportError("no AWS credentials found (configure a profile or AWS_* variables)")
    return frozen


def _run(args: argparse.Namespace) -> None:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    body = build_body(args)
    validate_url(args.url)
    url = request_url(args.url, args.method, body)
    payload = json.dumps(body).encode() if args.method == "POST" else b""
    try:
        session = boto3.Session(profile_name=args.profile)
    except BotoCoreError as exc:  # e.g. ProfileNotFound
        raise TransportError(f"cannot load AWS credentials: {exc}") from None
    region = _resolve_region(args.region, session, args.url)
    credentials = _load_credentials(session)
    headers = sign_request(args.method, url, payload, credentials, region)
    try:
        response = requests.request(
            args.method, url, data=payload or None, headers=headers, timeout=args.timeout
        )
    except requests.RequestException as exc:
        raise TransportError(
            f"request failed: {type(exc).__name__}: {_one_line(str(exc))}"
        ) from None
    _report(response)


def main(argv: list[str] | None = None) -> int:
    """Run the command line client.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        Exit code: 0 ok, 1 function failure, 2 usage, 3 transport or credentials.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has already printed usage or help
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    try:
        _run(args)
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
