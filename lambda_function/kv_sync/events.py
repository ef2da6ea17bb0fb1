"""Recognising and validating the events the function accepts.

Three triggers: a direct invocation (``aws lambda invoke``), a Function URL
request (payload format 2.0) and an EventBridge scheduled event, whose
``detail`` may carry a selector. Bad input is rejected here, before anything
reaches Cloudflare or DynamoDB.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import TYPE_CHECKING, Any

from kv_sync.errors import MethodNotAllowedError, ValidationError
from kv_sync.model import SyncRequest, Trigger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent

MAX_KEY_BYTES = 512
MAX_KEY_NAMES = 1000
MAX_CURSOR_CHARS = 4096
MAX_BODY_BYTES = 64 * 1024
SELECTORS = ("key_name", "key_names", "prefix", "all")
FLAGS = ("delete_missing", "dry_run", "force_delete")
ALLOWED_FIELDS = (*SELECTORS, "cursor", *FLAGS)
ALLOWED_METHODS = ("GET", "POST")
SCHEDULED_EVENT = "Scheduled Event"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def detect_trigger(event: object) -> Trigger:
    """Tell the trigger from the event's shape (never raises)."""
    if isinstance(event, dict):
        context = event.get("requestContext")
        if isinstance(context, dict) and isinstance(context.get("http"), dict):
            return Trigger.FUNCTION_URL
        if event.get("detail-type") == SCHEDULED_EVENT:
            return Trigger.SCHEDULE
    return Trigger.DIRECT


def parse_event(event: object, default_key: str) -> SyncRequest:
    """Validate an event and return what it asks for.

    Raises
    ------
    ValidationError
        The event, body, selector or key name is malformed.
    MethodNotAllowedError
        A Function URL request used a method other than GET or POST.
    """
    trigger = detect_trigger(event)
    fields: Any = event
    if trigger is Trigger.SCHEDULE:
        # A rule's constant input carries a selector in "detail" (Terraform sends it
        # so), so that every selector keeps schedule semantics; empty: the default key.
        detail = event.get("detail") if isinstance(event, dict) else None
        fields = detail if isinstance(detail, dict) else {}
    elif trigger is Trigger.FUNCTION_URL:
        # Imported here: the data classes cost cold start on every other trigger.
        from aws_lambda_powertools.utilities.data_classes import LambdaFunctionUrlEvent

        try:
            fields = _function_url_fields(LambdaFunctionUrlEvent(event))  # type: ignore[arg-type]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValidationError(
                f"Malformed Function URL event ({type(exc).__name__}); expected payload format 2.0"
            ) from None
    elif event is None:
        fields = {}
    if not isinstance(fields, dict):
        raise ValidationError(
            'The event must be a JSON object such as {"key_name": "..."}, '
            f"not {type(fields).__name__}"
        )
    return _request(fields, default_key, trigger)


def validate_key_name(key_name: object, what: str = "key_name") -> str:
    """Check a key name against KV's rules and ours; return it unchanged."""
    if not isinstance(key_name, str):
        raise ValidationError(f"{what} must be a string, not {type(key_name).__name__}")
    try:
        size = len(key_name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationError(f"{what} is not valid UTF-8 (it holds a lone surrogate)") from None
    if size == 0:
        raise ValidationError(f"{what} must not be empty")
    if size > MAX_KEY_BYTES:
        raise ValidationError(f"{what} is {size} bytes; KV keys are at most {MAX_KEY_BYTES}")
    if _CONTROL.search(key_name):
        raise ValidationError(f"{what} must not contain control characters")
    if what == "key_name" and key_name in {".", ".."}:
        raise ValidationError("key_name must not be '.' or '..'")
    return key_name


def _request(fields: dict[str, Any], default_key: str, trigger: Trigger) -> SyncRequest:
    unknown = sorted(str(name) for name in fields if name not in ALLOWED_FIELDS)
    if unknown:
        shown = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise ValidationError(f"Unknown field(s) {shown}; allowed: {', '.join(ALLOWED_FIELDS)}")
    given = [name for name in SELECTORS if name in fields]
    if len(given) > 1:
        raise ValidationError(f"Use only one of {', '.join(SELECTORS)}; got {', '.join(given)}")
    selector = given[0] if given else "key_name"
    flags = {name: _optional_bool(fields.get(name), name) for name in FLAGS}
    common: dict[str, Any] = {
        "trigger": trigger,
        "delete_missing": flags["delete_missing"],
        "dry_run": bool(flags["dry_run"]),
        "force_delete": bool(flags["force_delete"]),
    }
    if fields.get("cursor") is not None:  # null: no cursor, as on a first call
        if selector == "key_name":
            raise ValidationError("cursor continues a key_names, prefix or all sync only")
        common["cursor"] = _cursor(fields["cursor"])
    if selector == "key_names":
        return SyncRequest(key_names=_key_names(fields["key_names"]), **common)
    if selector == "prefix":
        if fields["prefix"] == "":
            raise ValidationError('prefix must not be empty; use {"all": true} for the namespace')
        return SyncRequest(prefix=validate_key_name(fields["prefix"], "prefix"), **common)
    if selector == "all":
        if fields["all"] is not True:
            raise ValidationError("all must be true to sync the whole namespace")
        return SyncRequest(all_keys=True, **common)
    key_name = fields.get("key_name", default_key)
    return SyncRequest(key_name=validate_key_name(key_name), **common)


def _key_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValidationError(f"key_names must be a list of strings, not {type(value).__name__}")
    if not 1 <= len(value) <= MAX_KEY_NAMES:
        raise ValidationError(f"key_names must hold 1 to {MAX_KEY_NAMES} names, got {len(value)}")
    names: dict[str, None] = {}  # ordered, without duplicates
    for index, name in enumerate(value):
        try:
            names[validate_key_name(name)] = None
        except ValidationError as exc:
            raise ValidationError(f"key_names[{index}]: {exc.message}") from None
    return tuple(names)


def _optional_bool(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValidationError(f"{name} must be true or false, not {type(value).__name__}")


def _cursor(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CURSOR_CHARS:
        raise ValidationError("cursor must be the non-empty next_cursor of a previous run")
    return value


def _query_fields(query: dict[str, str]) -> dict[str, Any]:
    """Query parameters as event fields (a query carries no lists or JSON booleans)."""
    fields: dict[str, Any] = dict(query)
    if "key_names" in fields:
        raise ValidationError("key_names needs a POST body (a JSON list)")
    for name in ("all", *FLAGS):
        if name in fields:
            text = fields[name].strip().lower()
            if text not in {"true", "false"}:
                raise ValidationError(f"{name} must be true or false")
            fields[name] = text == "true"
    return fields


def _function_url_fields(request: LambdaFunctionUrlEvent) -> Any:
    method = str(request.request_context.http.method or "").upper()
    if method not in ALLOWED_METHODS:
        raise MethodNotAllowedError(
            f"Method {method[:10] or '(none)'} is not allowed; use GET or POST"
        )
    if method == "GET":
        return _query_fields(dict(request.query_string_parameters))
    body = request.body
    if not body:
        return {}
    if len(body) > MAX_BODY_BYTES * 4 // 3 + 4:
        raise ValidationError(f"Request body exceeds {MAX_BODY_BYTES // 1024} KiB")
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
