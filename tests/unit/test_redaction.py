"""Keeping secrets out of everything the function emits (``kv_sync.redaction``).

Every secret value the function loads is registered; error messages are
redacted when the error is created, and every log line by the logger's
formatter. The registry lives as long as the container, so each test registers
values of its own.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import boto3
import pytest

from kv_sync import errors, redaction
from kv_sync.credentials import load_credentials
from kv_sync.observability import logger
from kv_sync.settings import load_settings
from tests.support.cloudflare import SECRET, SECRET_VALUE

ERROR_CLASSES = [
    errors.SyncError,
    errors.ValidationError,
    errors.MethodNotAllowedError,
    errors.ConfigurationError,
    errors.AuthError,
    errors.NotFoundError,
    errors.RateLimitedError,
    errors.ApiError,
    errors.DeadlineError,
    errors.NetworkError,
    errors.ValueTooLargeError,
    errors.StorageError,
    errors.InternalError,
]


def new_secret(label: str = "tok") -> str:
    """A secret value no other test has registered."""
    return f"{label}-{uuid.uuid4().hex}"


def log_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_registered_secrets_are_replaced_everywhere_in_a_text():
    # GIVEN a token and the secret string it came from
    token = new_secret()
    redaction.register(token, json.dumps({"api_token": token}))

    # WHEN text quoting the token twice is redacted
    text = redaction.redact(f"Authorization: Bearer {token}; body {token}")

    # THEN no occurrence is left
    assert token not in text
    assert text.count(redaction.REPLACEMENT) == 2


def test_short_values_are_not_treated_as_secrets():
    # GIVEN a value too short to be a real token (it would blank ordinary words)
    redaction.register("on")

    # WHEN text holding it is redacted
    # THEN the text is kept
    assert redaction.redact("turned on") == "turned on"


def test_longest_secret_is_replaced_first():
    # GIVEN a secret that contains another one
    inner = new_secret()
    outer = f"{inner}-and-more"
    redaction.register(inner, outer)

    # WHEN text with the longer one is redacted
    # THEN it is replaced whole, leaving no tail of it behind
    assert redaction.redact(f"x {outer} y") == f"x {redaction.REPLACEMENT} y"


def test_text_without_secrets_is_unchanged():
    # GIVEN registered secrets
    redaction.register(new_secret())

    # WHEN text quoting none of them is redacted
    # THEN it is unchanged
    assert redaction.redact("Synced 'classic-domain': value stored") == (
        "Synced 'classic-domain': value stored"
    )


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_messages_are_redacted_when_the_error_is_created(error_class):
    # GIVEN a loaded secret
    token = new_secret()
    redaction.register(token)

    # WHEN an error is created from text that quotes it (an upstream error page, say)
    error = error_class(f"Cloudflare said: bad token {token} for this account")

    # THEN neither its message nor its text as an exception holds the secret
    assert token not in error.message
    assert token not in str(error)
    assert redaction.REPLACEMENT in error.message
    assert error.message.startswith("Cloudflare said: bad token ")


def test_credentials_the_function_loads_are_redacted_from_then_on(aws):
    # GIVEN a secret holding a token nothing has registered yet
    token = new_secret("cf")
    boto3.client("secretsmanager").put_secret_value(
        SecretId=SECRET, SecretString=json.dumps({**SECRET_VALUE, "api_token": token})
    )

    # WHEN the function loads its credentials, and later an error quotes the token
    assert load_credentials(load_settings()).api_token == token
    error = errors.ApiError(f"upstream echoed Authorization: Bearer {token}")

    # THEN the error does not carry it
    assert token not in error.message


# ------------------------------------------------------------------------ logs


def test_log_lines_never_carry_a_registered_secret(log_stream):
    # GIVEN a loaded secret
    token = new_secret()
    redaction.register(token)

    # WHEN a log line quotes it in its message and in an extra field
    logger.info(f"calling with {token}", extra={"header": f"Bearer {token}", "n": 1})

    # THEN the line is written, with the secret replaced everywhere
    out = log_stream.getvalue()
    assert token not in out
    [line] = log_lines(log_stream)
    assert line["message"] == f"calling with {redaction.REPLACEMENT}"
    assert line["header"] == f"Bearer {redaction.REPLACEMENT}"
    assert line["n"] == 1


def test_logged_exceptions_never_carry_a_registered_secret(log_stream):
    # GIVEN a loaded secret quoted by some library's exception
    token = new_secret()
    redaction.register(token)

    # WHEN the exception is logged with its traceback
    try:
        raise RuntimeError(f"request failed: headers={{'Authorization': 'Bearer {token}'}}")
    except RuntimeError:
        logger.exception("Unexpected failure")

    # THEN the traceback is there, without the secret
    out = log_stream.getvalue()
    assert "RuntimeError" in out
    assert token not in out


def test_log_lines_without_secrets_are_plain_json(log_stream):
    # GIVEN secrets registered, none of which a line quotes
    redaction.register(new_secret())

    # WHEN a line is logged
    logger.warning("Retrying Cloudflare call", extra={"attempt": 2})

    # THEN it is the usual structured line
    [line] = log_lines(log_stream)
    assert line["level"] == "WARNING"
    assert line["message"] == "Retrying Cloudflare call"
    assert line["attempt"] == 2
    assert line["service"] == "kv-sync"
