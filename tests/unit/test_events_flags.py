"""The ``dry_run`` and ``force_delete`` switches in events (``kv_sync.events``).

Both are JSON booleans in a direct event, a Function URL POST body or a schedule's
input, and ``true``/``false`` in a Function URL GET query; anything else is a
``VALIDATION_ERROR`` (400) naming the switch, before anything is read or written.
"""

from __future__ import annotations

from typing import Any

import pytest

from kv_sync.errors import ValidationError
from kv_sync.events import parse_event
from kv_sync.model import SyncRequest
from tests.support.function import scheduled
from tests.support.function import url_get as get
from tests.support.function import url_post as post

DEFAULT = "redirect-all-users-to-essentials"
FLAGS = ["dry_run", "force_delete"]
SELECTORS: list[dict[str, Any]] = [
    {"key_name": "classic-domain"},
    {"key_names": ["a", "b"]},
    {"prefix": "flags/"},
    {"all": True},
]


def parse(event: object) -> SyncRequest:
    return parse_event(event, DEFAULT)


def rejected(event: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse(event)
    assert info.value.type == "VALIDATION_ERROR"
    assert info.value.http_status == 400
    return info.value


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("via", ["direct", "post", "post_base64", "schedule"])
def test_a_boolean_switch_in_a_body_is_kept(flag, value, via):
    # GIVEN a prefix sync with the switch set, sent each way a body can arrive
    fields = {"prefix": "flags/", flag: value}
    event = {
        "direct": fields,
        "post": post(fields),
        "post_base64": post(fields, base64_encoded=True),
        "schedule": scheduled(fields),
    }[via]

    # WHEN it is parsed
    request = parse(event)

    # THEN the request carries it, and the other switch stays off
    assert getattr(request, flag) is value
    other = next(name for name in FLAGS if name != flag)
    assert getattr(request, other) is False


@pytest.mark.parametrize("selector", SELECTORS, ids=lambda s: next(iter(s)))
def test_every_selector_takes_both_switches(selector):
    # GIVEN a request with either selector, delete_missing, dry_run and force_delete
    fields = {**selector, "delete_missing": True, "dry_run": True, "force_delete": True}

    # WHEN it is parsed
    request = parse(fields)

    # THEN all three switches are on
    assert (request.delete_missing, request.dry_run, request.force_delete) == (True, True, True)


@pytest.mark.parametrize("flag", FLAGS)
def test_a_switch_left_out_or_null_is_off(flag):
    # GIVEN requests without the switch, and with it null
    # WHEN they are parsed
    absent = parse({"all": True})
    null = parse({"all": True, flag: None})

    # THEN it is off: a real run, guarded
    assert getattr(absent, flag) is False
    assert getattr(null, flag) is False


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("TRUE", True), (" True ", True), ("false", False), ("False", False)],
)
def test_a_switch_in_a_get_query_is_read_as_a_boolean(flag, text, expected):
    # GIVEN a Function URL GET with ?prefix=flags/&<switch>=<text>
    # WHEN it is parsed
    request = parse(get({"prefix": "flags/", flag: text}))

    # THEN the switch is that boolean
    assert getattr(request, flag) is expected


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("text", ["1", "yes", "on", "", "maybe"])
def test_a_switch_in_a_get_query_with_another_word_is_rejected(flag, text):
    # GIVEN a GET whose switch is neither true nor false
    # WHEN it is parsed
    error = rejected(get({"all": "true", flag: text}))

    # THEN it is refused, naming the switch, rather than guessed
    assert error.message == f"{flag} must be true or false"


@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize(
    ("value", "type_name"),
    [("true", "str"), (1, "int"), (0, "int"), ([True], "list"), ({"on": True}, "dict")],
)
@pytest.mark.parametrize("via", ["direct", "post", "schedule"])
def test_a_switch_that_is_not_a_json_boolean_is_rejected(flag, value, type_name, via):
    # GIVEN a body whose switch is not a JSON boolean
    fields = {"all": True, flag: value}
    event = {"direct": fields, "post": post(fields), "schedule": scheduled(fields)}[via]

    # WHEN it is parsed
    error = rejected(event)

    # THEN it is refused, naming the switch and what was sent instead
    assert error.message == f"{flag} must be true or false, not {type_name}"
