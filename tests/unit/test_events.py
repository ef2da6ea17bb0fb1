"""Event recognition and validation (``kv_sync.events``).

Every case here is input an operator or a scheduler can send; bad input must be
rejected with a ``ValidationError`` (400) before anything reaches Cloudflare.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from kv_sync.errors import MethodNotAllowedError, ValidationError
from kv_sync.events import detect_trigger, parse_event, validate_key_name
from kv_sync.model import SyncRequest, Trigger
from tests.support.function import load_event

DEFAULT = "redirect-all-users-to-essentials"
MAX_BODY = 64 * 1024


def url_event(
    method: str = "POST",
    body: str | None = None,
    *,
    base64_encoded: bool = False,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of the sample Function URL event with the request parts replaced."""
    event = copy.deepcopy(load_event("lambdaFunctionUrlIAMEvent.json"))
    event["requestContext"]["http"]["method"] = method
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    if query is not None:
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    return event


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rejected(event: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_event(event, DEFAULT)
    # A plain validation failure, never the 405 subclass, unless the test says so.
    assert info.value.type == "VALIDATION_ERROR"
    assert info.value.http_status == 400
    assert info.value.is_retryable is False
    return info.value


# --------------------------------------------------------------------------- triggers


@pytest.mark.parametrize(
    ("sample", "trigger"),
    [
        ("directInvokeDefaultEvent.json", Trigger.DIRECT),
        ("directInvokeEvent.json", Trigger.DIRECT),
        ("lambdaFunctionUrlIAMEvent.json", Trigger.FUNCTION_URL),
        ("lambdaFunctionUrlIAMEventBase64.json", Trigger.FUNCTION_URL),
        ("lambdaFunctionUrlIAMEventGet.json", Trigger.FUNCTION_URL),
        ("lambdaFunctionUrlIAMEventEmptyBody.json", Trigger.FUNCTION_URL),
        ("lambdaFunctionUrlIAMEventDelete.json", Trigger.FUNCTION_URL),
        ("scheduledEvent.json", Trigger.SCHEDULE),
    ],
)
def test_sample_events_are_recognised_as_their_trigger(sample, trigger):
    # GIVEN a sample event shaped like the real one
    event = load_event(sample)

    # WHEN its trigger is detected
    detected = detect_trigger(event)

    # THEN it is the trigger that decides the reply's shape
    assert detected is trigger


@pytest.mark.parametrize("event", [None, [], "text", 42, {"requestContext": {"http": "GET"}}])
def test_unrecognisable_events_are_treated_as_direct_without_raising(event):
    # GIVEN an event that is neither a Function URL request nor a scheduled event
    # WHEN its trigger is detected
    detected = detect_trigger(event)

    # THEN it is a direct invocation (the reply is the plain JSON document)
    assert detected is Trigger.DIRECT


def test_event_with_other_detail_type_is_not_a_schedule():
    # GIVEN an EventBridge event that is not a scheduled event
    event = load_event("scheduledEvent.json")
    event["detail-type"] = "Object Created"

    # WHEN its trigger is detected
    # THEN it is not taken for a scheduled sync
    assert detect_trigger(event) is not Trigger.SCHEDULE


# ----------------------------------------------------------------------- direct events


def test_empty_direct_event_syncs_default_key():
    # GIVEN the sample `{}` event
    # WHEN it is parsed
    request = parse_event(load_event("directInvokeDefaultEvent.json"), DEFAULT)

    # THEN the default key is synced
    assert request == SyncRequest(key_name=DEFAULT, trigger=Trigger.DIRECT)


def test_direct_event_with_key_name_syncs_that_key():
    # GIVEN the sample `{"key_name": "classic-domain"}` event
    # WHEN it is parsed
    request = parse_event(load_event("directInvokeEvent.json"), DEFAULT)

    # THEN that key is synced
    assert request == SyncRequest(key_name="classic-domain", trigger=Trigger.DIRECT)


def test_default_key_comes_from_the_caller():
    # GIVEN a deployment whose DEFAULT_KEY_NAME differs from the built-in one
    # WHEN an empty event is parsed with it
    request = parse_event({}, "another-flag")

    # THEN that configured key is synced
    assert request.key_name == "another-flag"


def test_none_event_syncs_default_key():
    # GIVEN an invocation with a null payload
    # WHEN it is parsed
    request = parse_event(None, DEFAULT)

    # THEN it behaves like `{}`
    assert request == SyncRequest(key_name=DEFAULT, trigger=Trigger.DIRECT)


@pytest.mark.parametrize(
    ("event", "type_name"),
    [(["classic-domain"], "list"), ("classic-domain", "str"), (42, "int"), (True, "bool")],
)
def test_non_object_direct_events_are_rejected(event, type_name):
    # GIVEN a payload that is valid JSON but not an object
    # WHEN it is parsed
    error = rejected(event)

    # THEN the message says an object is needed and what was sent instead
    assert "JSON object" in error.message
    assert type_name in error.message


def test_unknown_field_in_direct_event_is_rejected_naming_allowed_fields():
    # GIVEN a direct event with a misspelt field
    event = {"keyName": "classic-domain"}

    # WHEN it is parsed
    error = rejected(event)

    # THEN the message names the offending field and the allowed one
    assert "'keyName'" in error.message
    assert "allowed: key_name" in error.message


def test_unknown_field_is_rejected_even_next_to_a_valid_key_name():
    # GIVEN a valid key_name plus a misspelt dry_run the function does not understand
    event = {"key_name": "classic-domain", "dryRun": True}

    # WHEN it is parsed
    error = rejected(event)

    # THEN the request is refused rather than silently syncing for real, and the
    # message points to the spelling the function understands
    assert "'dryRun'" in error.message
    allowed = error.message.split("allowed:", 1)[1]
    assert {"key_name", "dry_run", "force_delete"} <= {name.strip() for name in allowed.split(",")}


def test_many_unknown_fields_give_a_bounded_message():
    # GIVEN an event with dozens of unknown, long field names
    event = {f"field-{i:03d}-" + "x" * 200: i for i in range(50)}

    # WHEN it is parsed
    error = rejected(event)

    # THEN the message stays short enough to read and log
    assert len(error.message) < 600
    assert "allowed: key_name" in error.message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(None, "NoneType"), (123, "int"), (["a"], "list"), ({"k": "v"}, "dict"), (True, "bool")],
)
def test_non_string_key_name_is_rejected(value, type_name):
    # GIVEN a key_name that is not a string
    # WHEN the event is parsed
    error = rejected({"key_name": value})

    # THEN the message says a string is needed
    assert "must be a string" in error.message
    assert type_name in error.message


# ----------------------------------------------------------------------- key names


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "classic-domain",
        "../../tokens/verify",
        "a/b?c#d",
        "key with spaces",
        "...",
        ".hidden",
        "emoji-😀",
        "日本語キー",
        "x" * 512,
    ],
)
def test_valid_key_names_are_returned_unchanged(key):
    # GIVEN a key name KV accepts, however odd
    # WHEN it is validated through a direct event
    request = parse_event({"key_name": key}, DEFAULT)

    # THEN exactly that key is synced
    assert request.key_name == key
    assert validate_key_name(key) == key


@pytest.mark.parametrize(
    ("fits", "too_long"),
    [
        ("x" * 512, "x" * 513),
        ("é" * 256, "é" * 256 + "x"),  # 2-byte characters
        ("€" * 170 + "xy", "€" * 171),  # 3-byte characters: 512 vs 513 bytes
        ("😀" * 128, "😀" * 128 + "x"),  # 4-byte characters
    ],
    ids=["ascii", "2-byte", "3-byte", "4-byte"],
)
def test_key_name_limit_is_512_utf8_bytes_not_characters(fits, too_long):
    # GIVEN two keys either side of KV's 512-byte limit
    assert len(fits.encode()) == 512
    assert len(too_long.encode()) == 513

    # WHEN both are validated
    accepted = validate_key_name(fits)
    with pytest.raises(ValidationError) as info:
        validate_key_name(too_long)

    # THEN only the one that fits is accepted, and the message gives the byte size
    assert accepted == fits
    assert info.value.message == "key_name is 513 bytes; KV keys are at most 512"


def test_multibyte_key_within_512_characters_but_over_512_bytes_is_rejected():
    # GIVEN 200 characters that are 600 UTF-8 bytes
    key = "€" * 200

    # WHEN it is validated
    error = rejected({"key_name": key})

    # THEN it is refused by byte size, as Cloudflare would
    assert error.message == "key_name is 600 bytes; KV keys are at most 512"


def test_empty_key_name_is_rejected():
    # GIVEN an explicit empty key_name (not an absent one)
    # WHEN it is parsed
    error = rejected({"key_name": ""})

    # THEN it is refused instead of silently syncing the default key
    assert "empty" in error.message


@pytest.mark.parametrize("key", [".", ".."])
def test_dot_and_dotdot_are_rejected(key):
    # GIVEN a key name Cloudflare forbids
    # WHEN it is parsed
    error = rejected({"key_name": key})

    # THEN the message says so
    assert "'.' or '..'" in error.message


@pytest.mark.parametrize(
    "char",
    ["\x00", "\x01", "\t", "\n", "\r", "\x1f", "\x7f", "\x80", "\x85", "\x9f"],
    ids=lambda c: f"U+{ord(c):04X}",
)
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_control_characters_anywhere_are_rejected(char, where):
    # GIVEN a key name containing a C0/C1 control character or DEL
    key = {"start": char + "key", "middle": "ke" + char + "y", "end": "key" + char}[where]

    # WHEN it is parsed
    error = rejected({"key_name": key})

    # THEN it is refused as a control character
    assert "control characters" in error.message


def test_characters_just_outside_the_control_ranges_are_accepted():
    # GIVEN a key with a space, '~' and U+00A0 (the neighbours of the control ranges)
    key = " ~\u00a0"

    # WHEN it is validated
    # THEN it is accepted unchanged
    assert validate_key_name(key) == key


def test_lone_surrogate_is_rejected_as_invalid_utf8():
    # GIVEN a key name that cannot be encoded as UTF-8
    key = "bad-\ud800-key"

    # WHEN it is parsed
    error = rejected({"key_name": key})

    # THEN it is a validation error, not an unhandled UnicodeEncodeError
    assert "UTF-8" in error.message


# --------------------------------------------------------------------- schedule


def test_scheduled_event_syncs_default_key():
    # GIVEN the sample EventBridge scheduled event
    # WHEN it is parsed
    request = parse_event(load_event("scheduledEvent.json"), DEFAULT)

    # THEN the default key is synced, reported as a scheduled run
    assert request == SyncRequest(key_name=DEFAULT, trigger=Trigger.SCHEDULE)


def test_scheduled_event_fields_are_not_rejected_as_unknown():
    # GIVEN a scheduled event, which carries many EventBridge fields besides key_name
    event = load_event("scheduledEvent.json")
    assert set(event) - {"key_name"}

    # WHEN it is parsed
    request = parse_event(event, "configured-key")

    # THEN it is accepted and syncs the configured default key
    assert request.key_name == "configured-key"


# ------------------------------------------------------------------ Function URL


def test_function_url_post_json_body_syncs_that_key():
    # GIVEN the sample Function URL POST with {"key_name": "classic-domain"}
    # WHEN it is parsed
    request = parse_event(load_event("lambdaFunctionUrlIAMEvent.json"), DEFAULT)

    # THEN that key is synced and the reply will be an HTTP response
    assert request == SyncRequest(key_name="classic-domain", trigger=Trigger.FUNCTION_URL)


def test_function_url_base64_body_is_decoded():
    # GIVEN the sample POST whose body is base64-encoded
    # WHEN it is parsed
    request = parse_event(load_event("lambdaFunctionUrlIAMEventBase64.json"), DEFAULT)

    # THEN the key inside the decoded body is synced
    assert request == SyncRequest(key_name="classic-domain", trigger=Trigger.FUNCTION_URL)


def test_function_url_base64_body_with_unicode_key():
    # GIVEN a base64 body holding a non-ASCII key name
    body = b64(json.dumps({"key_name": "ключ-😀"}, ensure_ascii=False).encode())

    # WHEN it is parsed
    request = parse_event(url_event(body=body, base64_encoded=True), DEFAULT)

    # THEN the key is decoded exactly
    assert request.key_name == "ключ-😀"


def test_function_url_get_query_syncs_that_key():
    # GIVEN the sample GET ?key_name=classic-domain
    # WHEN it is parsed
    request = parse_event(load_event("lambdaFunctionUrlIAMEventGet.json"), DEFAULT)

    # THEN that key is synced
    assert request == SyncRequest(key_name="classic-domain", trigger=Trigger.FUNCTION_URL)


def test_function_url_get_without_query_syncs_default_key():
    # GIVEN a GET with no query string at all (queryStringParameters absent)
    event = load_event("lambdaFunctionUrlIAMEventGet.json")
    event.pop("queryStringParameters")
    event["rawQueryString"] = ""

    # WHEN it is parsed
    request = parse_event(event, DEFAULT)

    # THEN the default key is synced
    assert request.key_name == DEFAULT


def test_function_url_get_with_unknown_query_parameter_is_rejected():
    # GIVEN a GET with a misspelt query parameter
    event = url_event("GET", query={"key": "classic-domain"})

    # WHEN it is parsed
    error = rejected(event)

    # THEN the message names the allowed parameter
    assert "'key'" in error.message
    assert "allowed: key_name" in error.message


def test_function_url_get_query_key_is_validated():
    # GIVEN a GET asking for the forbidden key '..'
    event = url_event("GET", query={"key_name": ".."})

    # WHEN it is parsed
    # THEN it is rejected like a direct event would be
    rejected(event)


def test_function_url_get_ignores_the_body():
    # GIVEN a GET that also carries a body with a different key
    event = url_event("GET", body='{"key_name": "from-body"}', query={"key_name": "from-query"})

    # WHEN it is parsed
    request = parse_event(event, DEFAULT)

    # THEN the query decides, as documented for GET
    assert request.key_name == "from-query"


@pytest.mark.parametrize("method", ["post", "Post", "get"])
def test_method_names_are_case_insensitive(method):
    # GIVEN a request whose method is not upper-case
    event = url_event(method, body='{"key_name": "k"}', query={"key_name": "k"})

    # WHEN it is parsed
    request = parse_event(event, DEFAULT)

    # THEN it is served like GET/POST
    assert request.key_name == "k"


def test_function_url_empty_body_sample_syncs_default_key():
    # GIVEN the sample POST with no body
    # WHEN it is parsed
    request = parse_event(load_event("lambdaFunctionUrlIAMEventEmptyBody.json"), DEFAULT)

    # THEN the default key is synced
    assert request == SyncRequest(key_name=DEFAULT, trigger=Trigger.FUNCTION_URL)


@pytest.mark.parametrize(
    ("body", "base64_encoded"),
    [("", False), ("", True), ("   \r\n\t ", False), (b64(b" \n \n"), True)],
    ids=["empty", "empty-base64", "whitespace", "whitespace-base64"],
)
def test_function_url_blank_body_syncs_default_key(body, base64_encoded):
    # GIVEN a POST whose body is empty or only whitespace
    event = url_event(body=body, base64_encoded=base64_encoded)

    # WHEN it is parsed
    request = parse_event(event, DEFAULT)

    # THEN it counts as an empty request for the default key
    assert request.key_name == DEFAULT


def test_function_url_empty_json_object_syncs_default_key():
    # GIVEN a POST whose body is `{}`
    # WHEN it is parsed
    request = parse_event(url_event(body="{}"), DEFAULT)

    # THEN the default key is synced
    assert request.key_name == DEFAULT


@pytest.mark.parametrize(
    "body", ['{"key_name": ', "key_name=classic-domain", "{'key_name': 'x'}", "\ud800"]
)
def test_function_url_invalid_json_body_is_rejected(body):
    # GIVEN a POST body that is not JSON
    event = url_event(body=body)

    # WHEN it is parsed
    error = rejected(event)

    # THEN the message says the body is not valid JSON
    assert "not valid JSON" in error.message


def test_function_url_deeply_nested_json_body_is_rejected_cleanly():
    # GIVEN a small body nested deeper than the JSON parser can recurse
    event = url_event(body="[" * 50_000)

    # WHEN it is parsed
    error = rejected(event)

    # THEN it is a validation error, not an unhandled RecursionError
    assert "JSON" in error.message


def test_function_url_invalid_utf8_in_base64_body_is_rejected():
    # GIVEN a base64 body that decodes to bytes that are not UTF-8 text
    event = url_event(body=b64(b'{"key_name": "\xff\xfe"}'), base64_encoded=True)

    # WHEN it is parsed
    error = rejected(event)

    # THEN it is refused as not JSON
    assert "JSON" in error.message


@pytest.mark.parametrize(
    ("body", "type_name"),
    [('["classic-domain"]', "list"), ('"classic-domain"', "str"), ("42", "int"), ("null", "None")],
)
def test_function_url_json_body_that_is_not_an_object_is_rejected(body, type_name):
    # GIVEN a POST body that is valid JSON but not an object
    event = url_event(body=body)

    # WHEN it is parsed
    error = rejected(event)

    # THEN the message asks for an object and says what came instead
    assert "must be a JSON object" in error.message
    assert type_name in error.message


def test_function_url_unknown_body_field_is_rejected_naming_allowed_fields():
    # GIVEN a POST body with an unexpected field
    event = url_event(body='{"key_name": "a", "namespace": "other"}')

    # WHEN it is parsed
    error = rejected(event)

    # THEN the field and the allowed ones are named
    assert "'namespace'" in error.message
    assert "allowed: key_name" in error.message


@pytest.mark.parametrize("key", ["", ".", "..", "a\x00b", "x" * 513])
def test_function_url_body_key_name_is_validated(key):
    # GIVEN a POST body with a key name KV would refuse
    event = url_event(body=json.dumps({"key_name": key}))

    # WHEN it is parsed
    # THEN it is a 400 validation error
    rejected(event)


def test_function_url_body_with_escaped_control_character_is_rejected():
    # GIVEN a JSON body whose key_name smuggles NUL as a \u escape
    event = url_event(body='{"key_name": "a\\u0000b"}')

    # WHEN it is parsed
    error = rejected(event)

    # THEN the decoded control character is caught
    assert "control characters" in error.message


def padded_body(size: int) -> bytes:
    """A valid JSON object of exactly ``size`` bytes (padding is whitespace)."""
    core = b'{"key_name": "big"}'
    return core + b" " * (size - len(core))


def test_function_url_body_of_exactly_64_kib_is_accepted():
    # GIVEN a raw body at the 64 KiB limit
    body = padded_body(MAX_BODY)

    # WHEN it is parsed
    request = parse_event(url_event(body=body.decode()), DEFAULT)

    # THEN it is served
    assert request.key_name == "big"


def test_function_url_raw_body_over_64_kib_is_rejected():
    # GIVEN a raw body one byte over 64 KiB
    body = padded_body(MAX_BODY + 1)

    # WHEN it is parsed
    error = rejected(url_event(body=body.decode()))

    # THEN the message gives the limit
    assert "64 KiB" in error.message


def test_function_url_multibyte_body_over_64_kib_in_bytes_is_rejected():
    # GIVEN a body under 64 Ki characters but over 64 KiB as UTF-8
    body = '{"key_name": "k", "pad": "' + "€" * 22_000 + '"}'
    assert len(body) < MAX_BODY < len(body.encode())

    # WHEN it is parsed
    error = rejected(url_event(body=body))

    # THEN the size limit applies to bytes
    assert "64 KiB" in error.message


def test_function_url_huge_body_is_rejected_by_size():
    # GIVEN a multi-megabyte body
    body = "x" * 5_000_000

    # WHEN it is parsed
    error = rejected(url_event(body=body))

    # THEN it is refused for its size, not as bad JSON
    assert "64 KiB" in error.message


def test_function_url_base64_body_decoding_to_exactly_64_kib_is_accepted():
    # GIVEN a base64 body whose decoded payload is exactly 64 KiB
    body = b64(padded_body(MAX_BODY))

    # WHEN it is parsed
    request = parse_event(url_event(body=body, base64_encoded=True), DEFAULT)

    # THEN it is served (the limit is on the decoded size)
    assert request.key_name == "big"


def test_function_url_base64_body_decoding_to_over_64_kib_is_rejected():
    # GIVEN a base64 body whose decoded payload is 64 KiB + 1 byte
    body = b64(padded_body(MAX_BODY + 1))

    # WHEN it is parsed
    error = rejected(url_event(body=body, base64_encoded=True))

    # THEN it is refused for its size
    assert "64 KiB" in error.message


def test_function_url_oversized_base64_body_is_rejected_by_size():
    # GIVEN a base64 body far over the limit
    body = b64(b" " * (MAX_BODY * 2))

    # WHEN it is parsed
    error = rejected(url_event(body=body, base64_encoded=True))

    # THEN it is refused for its size
    assert "64 KiB" in error.message


@pytest.mark.parametrize(
    "body",
    ["not base64!", "eyJrZXlfbmFtZSI", "eyJr ZXlf", "####", "e30=extra"],
    ids=["punctuation", "bad-padding", "inner-space", "hashes", "data-after-padding"],
)
def test_function_url_invalid_base64_body_is_rejected(body):
    # GIVEN a body flagged as base64 that is not valid base64
    event = url_event(body=body, base64_encoded=True)

    # WHEN it is parsed
    error = rejected(event)

    # THEN the message says the base64 is invalid
    assert "not valid base64" in error.message


def test_function_url_base64_flag_false_treats_body_as_text():
    # GIVEN a JSON body that happens not to be base64-flagged
    event = url_event(body='{"key_name": "plain"}', base64_encoded=False)

    # WHEN it is parsed
    request = parse_event(event, DEFAULT)

    # THEN it is read as text, not decoded
    assert request.key_name == "plain"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_other_methods_get_405(method):
    # GIVEN a Function URL request with a method other than GET or POST
    event = url_event(method, body='{"key_name": "classic-domain"}')

    # WHEN it is parsed
    with pytest.raises(MethodNotAllowedError) as info:
        parse_event(event, DEFAULT)

    # THEN it is a 405 that names the method and the allowed ones
    error = info.value
    assert error.http_status == 405
    assert error.is_retryable is False
    assert method in error.message
    assert "GET or POST" in error.message


def test_delete_sample_event_gets_405():
    # GIVEN the sample DELETE request
    # WHEN it is parsed
    # THEN it is refused with 405
    with pytest.raises(MethodNotAllowedError):
        parse_event(load_event("lambdaFunctionUrlIAMEventDelete.json"), DEFAULT)


def test_method_is_checked_before_the_body():
    # GIVEN a PUT with a body that is not even JSON
    event = url_event("PUT", body="{{{")

    # WHEN it is parsed
    # THEN the caller learns about the method first (405, not 400)
    with pytest.raises(MethodNotAllowedError):
        parse_event(event, DEFAULT)


def test_missing_method_gets_405_with_readable_message():
    # GIVEN a Function URL-shaped event whose method is empty
    event = url_event("")

    # WHEN it is parsed
    with pytest.raises(MethodNotAllowedError) as info:
        parse_event(event, DEFAULT)

    # THEN the message still reads sensibly
    assert "(none)" in info.value.message


def test_absurd_method_name_is_truncated_in_message():
    # GIVEN a request with a very long method name
    event = url_event("X" * 5_000)

    # WHEN it is parsed
    with pytest.raises(MethodNotAllowedError) as info:
        parse_event(event, DEFAULT)

    # THEN the message does not echo all of it
    assert len(info.value.message) < 100


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "must not be empty"), ("x" * 513, "513 bytes"), ("a\nb", "control characters")],
)
def test_validation_messages_name_the_field_they_check(value, reason):
    # GIVEN a bad value checked as some other field than key_name
    # WHEN it is validated under that field's name
    with pytest.raises(ValidationError) as info:
        validate_key_name(value, what="prefix")

    # THEN the message names that field, so the caller knows which one to fix
    assert info.value.message.startswith("prefix ")
    assert reason in info.value.message


def test_dot_names_are_only_forbidden_as_a_key_name():
    # GIVEN "." used as a prefix (every key starting with a dot), not as a key
    # WHEN it is validated as a prefix
    # THEN it is accepted: only a key named "." or ".." is forbidden
    assert validate_key_name(".", what="prefix") == "."
