"""Recognising and validating the events the function accepts.

Three triggers: a direct invocation (``aws lambda invoke``), a Function URL
request (payload format 2.0) and an EventBridge scheduled event. Bad input is
rejected here, before anything reaches Cloudflare or DynamoDB.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent

from errors import MethodNotAllowedError, ValidationError

MAX_KEY_BYTES = 512
MAX_BODY_BYTES = 64 * 1024
ALLOWED_FIELDS = ("key_name",)
ALLOWED_METHODS = ("GET", "POST")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Trigger(StrEnum):
    """How the function was invoked; decides the shape of the reply."""

    DIRECT = "direct"
    FUNCTION_URL = "function_url"
    SCHEDULE = "schedule"


@dataclass(frozen=True)
class SyncRequest:
    """A validated request to sync one key."""

    key_name: str
    trigger: Trigger


def detect_trigger(event: object) -> Trigger:
    """Tell the trigger from the event's shape (never raises)."""
    if isinstance(event, dict):
        context = event.get("requestContext")
        if isinstance(context, dict) and isinstance(context.get("http"), dict):
            return Trigger.FUNCTION_URL
        if event.get("detail-type") == "Scheduled Event":
            return Trigger.SCHEDULE
    return Trigger.DIRECT


def parse_event(event: object, default_key: str) -> SyncRequest:
    """Validate an event and return what it asks for.

    Raises
    ------
    ValidationError
        The event, body or key name is malformed.
    MethodNotAllowedError
        A Function URL request used a method other than GET or POST.
    """
    trigger = detect_trigger(event)
    if trigger is Trigger.SCHEDULE:
        return SyncRequest(key_name=default_key, trigger=trigger)
    if trigger is Trigger.FUNCTION_URL:
        fields = _function_url_fields(LambdaFunctionUrlEvent(event))  # type: ignore[arg-type]
    elif isinstance(event, dict):
        fields = event
    elif event is None:
        fields = {}
    else:
        raise ValidationError(
            f'The event must be a JSON object such as {{"key_name": "..."}}, '
            f"not {type(event).__name__}"
        )
    return SyncRequest(key_name=_key_from(fields, default_key), trigger=trigger)


def validate_key_name(key_name: object) -> str:
    """Check a key name against KV's rules and ours; return it unchanged."""
    if not isinstance(key_name, str):
        raise ValidationError(f"key_name must be a string, not {type(key_name).__name__}")
    try:
        size = len(key_name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError("key_name is not valid UTF-8 (it holds a lone surrogate)") from None
    if size == 0:
        raise ValidationError("key_name must not be empty")
    if size > MAX_KEY_BYTES:
        raise ValidationError(f"key_name is {size} bytes; KV allows at most {MAX_KEY_BYTES}")
    if key_name in {".", ".."}:
        raise ValidationError("key_name must not be '.' or '..'")
    if _CONTROL.search(key_name):
        raise ValidationError("key_name must not contain control characters")
    return key_name


def _key_from(fields: dict[str, Any], default_key: str) -> str:
    unknown = sorted(str(name) for name in fields if name not in ALLOWED_FIELDS)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise ValidationError(f"Unknown field(s) {shown}; allowed: {', '.join(ALLOWED_FIELDS)}")
    if "key_name" not in fields:
        return default_key
    return validate_key_name(fields["key_name"])


def _function_url_fields(request: LambdaFunctionUrlEvent) -> dict[str, Any]:
    method = str(request.request_context.http.method or "").upper()
    if method not in ALLOWED_METHODS:
        raise MethodNotAllowedError(
            f"Method {method[:10] or '(none)'} is not allowed; use GET or POST"
        )
    if method == "GET":
        return dict(request.query_string_parameters)
    body = request.body
    if not body:
        return {}
    if len(body) > MAX_BODY_BYTES * 4 // 3 + 4:
        raise ValidationError(f"Request body exceeds {MAX_BODY_BYTES // 1024} KiB")
    raw: bytes
    if request.is_base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("Request body is not valid base64") from None
    else:
        raw = body.encode("utf-8", errors="surrogatepass")
    if len(raw) > MAX_BODY_BYTES:
        raise ValidationError(f"Request body exceeds {MAX_BODY_BYTES // 1024} KiB")
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationError("Request body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ValidationError(f"Request body must be a JSON object, not {type(parsed).__name__}")
    return parsed
