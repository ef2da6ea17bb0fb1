"""An independent SigV4 verifier: what AWS checks in front of an ``AWS_IAM`` Function URL.

Written from the AWS Signature Version 4 specification with ``hashlib`` and ``hmac``
only, so that a signing bug in the client or in botocore cannot hide behind a shared
implementation. ``verify_sigv4`` raises ``SignatureError`` (its message says why)
unless a raw request carries a valid signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, unquote

# The credentials the verifier trusts by default (made up; nothing real signs with them).
ACCESS_KEY = "AKIDEXAMPLEVERIFIER"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "session-token-for-the-verifier"
REGION = "us-east-1"
SERVICE = "lambda"
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
_AUTH_PREFIX = "AWS4-HMAC-SHA256 "


class SignatureError(Exception):
    """The request is not validly signed; the message says why."""


def _uri_encode(text: str, *, keep_slash: bool = False) -> str:
    return quote(text, safe="-_.~/" if keep_slash else "-_.~")


def _canonical_uri(raw_path: str) -> str:
    # Non-S3 services: the (already percent-encoded) path is encoded once more.
    return _uri_encode(raw_path or "/", keep_slash=True)


def _canonical_query(raw_query: str) -> str:
    pairs = []
    for item in raw_query.split("&") if raw_query else []:
        name, _, value = item.partition("=")
        pairs.append((_uri_encode(unquote(name)), _uri_encode(unquote(value))))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(("AWS4" + secret).encode(), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, "aws4_request")


def _parse_authorization(value: str) -> dict[str, str]:
    if not value.startswith(_AUTH_PREFIX):
        raise SignatureError("Authorization is not AWS4-HMAC-SHA256")
    fields: dict[str, str] = {}
    for part in value[len(_AUTH_PREFIX) :].split(","):
        name, sep, content = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed Authorization component {part!r}")
        fields[name] = content
    missing = {"Credential", "SignedHeaders", "Signature"} - set(fields)
    if missing:
        raise SignatureError(f"Authorization lacks {sorted(missing)}")
    return fields


@dataclass(frozen=True)
class VerifierConfig:
    """What the fake Function URL accepts."""

    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    session_token: str | None = SESSION_TOKEN
    region: str = REGION
    service: str = SERVICE


def verify_sigv4(
    config: VerifierConfig,
    method: str,
    target: str,
    headers: dict[str, list[str]],
    body: bytes,
    now: dt.datetime,
) -> None:
    """Raise SignatureError unless the request carries a valid SigV4 signature.

    ``headers`` maps lower-case names to every value received for that name.
    """

    def single(name: str) -> str:
        values = headers.get(name)
        if not values:
            raise SignatureError(f"missing header {name}")
        if len(values) > 1:
            raise SignatureError(f"repeated header {name}")
        return values[0]

    auth = _parse_authorization(single("authorization"))
    scope = auth["Credential"].split("/")
    if len(scope) != 5:
        raise SignatureError("malformed credential scope")
    access_key, scope_date, region, service, terminator = scope
    if access_key != config.access_key:
        raise SignatureError("unknown access key")
    if (region, service, terminator) != (config.region, config.service, "aws4_request"):
        raise SignatureError(f"wrong scope {region}/{service}/{terminator}")

    signed_headers = auth["SignedHeaders"].split(";")
    if signed_headers != sorted(signed_headers) or any(h != h.lower() for h in signed_headers):
        raise SignatureError("SignedHeaders must be lower-case and sorted")
    for required in ("host", "x-amz-date"):
        if required not in signed_headers:
            raise SignatureError(f"{required} is not a signed header")

    amz_date = single("x-amz-date")
    try:
        signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise SignatureError("malformed x-amz-date") from None
    if scope_date != amz_date[:8]:
        raise SignatureError("credential scope date differs from x-amz-date")
    if abs(now - signed_at) > MAX_CLOCK_SKEW:
        raise SignatureError("x-amz-date is more than 5 minutes from the server clock")

    if config.session_token is not None:
        if "x-amz-security-token" not in headers:
            raise SignatureError("session token missing")
        if not hmac.compare_digest(single("x-amz-security-token"), config.session_token):
            raise SignatureError("wrong session token")
        if "x-amz-security-token" not in signed_headers:
            raise SignatureError("session token is not signed")

    body_hash = hashlib.sha256(body).hexdigest()
    if "x-amz-content-sha256" in headers and single("x-amz-content-sha256") != body_hash:
        raise SignatureError("x-amz-content-sha256 does not match the body")

    canonical_headers = ""
    for name in signed_headers:
        if name not in headers:
            raise SignatureError(f"signed header {name} was not sent")
        values = [" ".join(v.split()) for v in headers[name]]
        canonical_headers += f"{name}:{','.join(values)}\n"

    path, _, query = target.partition("?")
    canonical_request = "\n".join(
        [
            method.upper(),
            _canonical_uri(path),
            _canonical_query(query),
            canonical_headers,
            auth["SignedHeaders"],
            body_hash,
        ]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            f"{scope_date}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = _signing_key(config.secret_key, scope_date, region, service)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, auth["Signature"]):
        raise SignatureError("signature mismatch")
