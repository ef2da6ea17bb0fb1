"""Where a multi-key run stands, as the opaque ``next_cursor`` (``kv_sync.cursor``).

A cursor is issued for one selector and must bring the next run back to exactly
where the last one stopped; anything else a caller sends is bad input (400).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from kv_sync.cursor import START, Position, decode, encode
from kv_sync.errors import ValidationError
from kv_sync.events import MAX_CURSOR_CHARS, parse_event
from kv_sync.model import SyncRequest

DEFAULT = "redirect-all-users-to-essentials"


def request(event: dict[str, Any]) -> SyncRequest:
    return parse_event(event, DEFAULT)


def with_cursor(event: dict[str, Any], value: str) -> SyncRequest:
    """The next run of ``event``'s selector, continuing from ``value``."""
    return request({**event, "cursor": value})


def raw_cursor(text: str) -> str:
    """A cursor carrying arbitrary text, encoded as the function encodes its own."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def issued_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The fields of a genuine cursor issued for ``event``'s selector (to forge others)."""
    token = encode(Position(cf_cursor="c", after="k"), request(event))
    fields: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return fields


# ---------------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    "position",
    [
        Position(cf_cursor="6Ck1la0VxJ0djhidm1MdX2FyD", after="flags/0999"),
        Position(cf_cursor=None, after="flags/last"),
        Position(offset=300),
        Position(cf_cursor="c", after="ключ/🙂 with spaces & ?=/+"),
        Position(),
    ],
    ids=["listing", "last-page", "names-offset", "unicode-key", "start"],
)
def test_cursor_round_trips(position):
    # GIVEN where a prefix run stopped
    event = {"prefix": "flags/"}

    # WHEN it is encoded as next_cursor and decoded by the next run
    token = encode(position, request(event))
    decoded = decode(with_cursor(event, token))

    # THEN the next run resumes at exactly the same place
    assert decoded == position


def test_a_request_without_cursor_starts_at_the_beginning():
    # GIVEN a first call, without a cursor
    # WHEN where it stands is asked
    # THEN it starts at the beginning
    assert decode(request({"all": True})) == START == Position()


def test_cursor_is_url_safe_text_that_the_event_validator_accepts():
    # GIVEN a position after a maximal 512-byte key of 4-byte characters
    position = Position(cf_cursor="x" * 200, after="🙂" * 128)

    # WHEN it is encoded
    token = encode(position, request({"all": True}))

    # THEN it can go into a GET query unescaped, and a request carrying it is accepted
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) <= MAX_CURSOR_CHARS
    assert with_cursor({"all": True}, token).cursor == token


def test_cursor_carries_over_to_continuations_with_other_options():
    # GIVEN a cursor from the first run of a prefix sync
    token = encode(Position(cf_cursor="c", after="flags/x"), request({"prefix": "flags/"}))

    # WHEN a continuation with delete_missing and a continuation count uses it
    later = request(
        {"prefix": "flags/", "cursor": token, "delete_missing": True, "continuation": 4}
    )

    # THEN it is accepted: options are not part of the selector
    assert decode(later) == Position(cf_cursor="c", after="flags/x")


def test_duplicate_names_do_not_change_which_run_a_cursor_belongs_to():
    # GIVEN the same names, once with duplicates (which are dropped)
    token = encode(Position(offset=1), request({"key_names": ["a", "b", "a"]}))

    # WHEN the cursor is used with the list without duplicates
    # THEN it continues that run
    assert decode(with_cursor({"key_names": ["a", "b"]}, token)) == Position(offset=1)


# ----------------------------------------------------------------- other selectors


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [
        ({"prefix": "flags/"}, {"prefix": "other/"}),
        ({"prefix": "flags/"}, {"all": True}),
        ({"all": True}, {"prefix": "flags/"}),
        ({"key_names": ["a", "b"]}, {"key_names": ["a", "b", "c"]}),
        ({"key_names": ["a", "b"]}, {"key_names": ["b", "a"]}),
        ({"key_names": ["flags/"]}, {"prefix": "flags/"}),
    ],
    ids=[
        "other-prefix",
        "prefix-to-all",
        "all-to-prefix",
        "more-names",
        "reordered-names",
        "names-to-prefix",
    ],
)
def test_cursor_of_another_selector_is_rejected(issued_for, used_with):
    # GIVEN a cursor issued for one selector
    token = encode(Position(cf_cursor="c", after="k", offset=1), request(issued_for))

    # WHEN it is used with a different one (a name offset or listing position
    # would point somewhere else there)
    with pytest.raises(ValidationError) as info:
        decode(with_cursor(used_with, token))

    # THEN it is refused as belonging to another selector
    assert info.value.type == "VALIDATION_ERROR"
    assert "different key_names, prefix or all selector" in info.value.message


# ------------------------------------------------------------------------ forgeries


@pytest.mark.parametrize(
    "token",
    ["not a cursor!", "é-non-ascii", "@@@@", base64.urlsafe_b64encode(b"\xff\xfe{").decode()],
    ids=["spaces", "non-ascii", "symbols", "not-utf8"],
)
def test_garbage_cursor_is_rejected(token):
    # GIVEN a cursor that is not even base64 JSON
    # WHEN it is decoded
    with pytest.raises(ValidationError) as info:
        decode(with_cursor({"all": True}, token))

    # THEN it is refused as bad input that names the cursor
    assert "cursor" in info.value.message


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        "{}",
        "[" * 3000,
    ],
    ids=["not-json", "json-list", "json-string", "empty-object", "deeply-nested"],
)
def test_cursor_that_is_not_a_cursor_object_is_rejected(payload):
    # GIVEN base64 text this function never issued
    # WHEN it is decoded
    with pytest.raises(ValidationError) as info:
        decode(with_cursor({"all": True}, raw_cursor(payload)))

    # THEN it is refused as not issued by the function
    assert "cursor" in info.value.message


@pytest.mark.parametrize(
    "change",
    [
        {"v": 2},
        {"v": None},
        {"c": 5},
        {"a": ["k"]},
        {"o": "ten"},
        {"o": [1]},
        {"o": True},
        {"o": -5},
        {"o": 1.5},
    ],
    ids=[
        "version-2",
        "no-version",
        "cf-cursor-int",
        "after-list",
        "offset-text",
        "offset-list",
        "offset-bool",
        "offset-negative",
        "offset-fraction",
    ],
)
def test_tampered_cursor_is_rejected(change):
    # GIVEN a genuine cursor of this selector with one field tampered with
    fields = {**issued_fields({"all": True}), **change}

    # WHEN it is decoded
    with pytest.raises(ValidationError) as info:
        decode(with_cursor({"all": True}, raw_cursor(json.dumps(fields))))

    # THEN it is refused as bad input that names the cursor
    assert "cursor" in info.value.message


@pytest.mark.parametrize("literal", ["Infinity", "NaN", "-Infinity"])
def test_cursor_with_non_finite_offset_is_rejected(literal):
    # GIVEN a cursor whose offset is a JSON literal Python's parser accepts
    fields = issued_fields({"key_names": ["a", "b"]})
    text = json.dumps({**fields, "o": 0}).replace('"o": 0', f'"o": {literal}')

    # WHEN it is decoded
    # THEN it is refused
    with pytest.raises(ValidationError):
        decode(with_cursor({"key_names": ["a", "b"]}, raw_cursor(text)))
