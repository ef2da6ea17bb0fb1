"""Where a multi-key run stands, as the opaque ``next_cursor`` (``kv_sync.cursor``).

A cursor is issued for one request (its selector, ``dry_run`` and an explicit
``delete_missing``) and must bring the next invocation back to exactly where the
last one stopped, with the run's totals (``RunState``); anything else a caller
sends is bad input (400).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import fields
from typing import Any

import pytest

from kv_sync.cursor import START, Position, RunState, decode, encode
from kv_sync.errors import ValidationError
from kv_sync.events import MAX_CURSOR_CHARS, parse_event
from kv_sync.model import SyncRequest

DEFAULT = "redirect-all-users-to-essentials"
OTHER_REQUEST = "cursor belongs to another request"
STATE = RunState(
    run_id="0f3c5a9e2b7d4c1e8a6f0b2d4e6c8a1f",
    started_at="2026-01-02T03:04:05.000006Z",
    listed=2000,
    stored=1990,
    to_delete=12,
    pending=1,
    written=40,
    unchanged=1950,
    failed=3,
)
STATE_FIELDS = [field.name for field in fields(RunState)]


def request(event: dict[str, Any]) -> SyncRequest:
    return parse_event(event, DEFAULT)


def with_cursor(event: dict[str, Any], value: str) -> SyncRequest:
    """The next run of ``event``'s selector, continuing from ``value``."""
    return request({**event, "cursor": value})


def raw_cursor(text: str) -> str:
    """A cursor carrying arbitrary text, encoded as the function encodes its own."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def issued_fields(event: dict[str, Any], state: RunState | None = None) -> dict[str, Any]:
    """The fields of a genuine cursor issued for ``event``'s selector (to forge others)."""
    token = encode(Position(cf_cursor="c", after="k"), state, request(event))
    found: dict[str, Any] = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return found


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
    token = encode(position, None, request(event))
    decoded = decode(with_cursor(event, token))

    # THEN the next run resumes at exactly the same place
    assert decoded == (position, None)


@pytest.mark.parametrize(
    "state",
    [
        STATE,
        RunState.new("2026-01-02T03:04:05.000006Z"),
        RunState("r", "2026-01-02T03:04:05.000006Z", listed=5, to_delete=2, deletions_off=True),
    ],
    ids=["mid-run", "new", "deletions-off"],
)
def test_cursor_round_trips_the_run_and_its_totals(state):
    # GIVEN an invocation of a delete_missing run pausing with its totals so far
    event = {"all": True, "delete_missing": True}
    position = Position(cf_cursor="6Ck1la0VxJ0djhidm1MdX2FyD", after="flags/0999")

    # WHEN its cursor is decoded by the next invocation
    token = encode(position, state, request(event))
    decoded = decode(with_cursor(event, token))

    # THEN the next invocation carries on the same run (the lease's id, the guard's
    # totals, whether a page failed) from the same place
    assert decoded == (position, state)


def test_a_new_run_has_its_own_id():
    # GIVEN two runs started at the same moment
    first = RunState.new("2026-01-02T03:04:05.000006Z")
    second = RunState.new("2026-01-02T03:04:05.000006Z")

    # THEN they are different runs with nothing done yet
    assert first.run_id != second.run_id
    assert (first.listed, first.stored, first.to_delete, first.pending) == (0, 0, 0, 0)
    assert first.deletions_off is False


def test_a_request_without_cursor_starts_at_the_beginning():
    # GIVEN a first call, without a cursor
    # WHEN where it stands is asked
    # THEN it starts at the beginning, as a new run
    assert decode(request({"all": True})) == (START, None)
    assert Position() == START


def test_cursor_is_url_safe_text_that_the_event_validator_accepts():
    # GIVEN a position after a maximal 512-byte key of 4-byte characters, in a run
    # with large totals
    position = Position(cf_cursor="x" * 200, after="🙂" * 128)
    big = 10**12
    state = RunState("f" * 32, "2026-01-02T03:04:05.000006Z", big, big, big, big, big, big, big)

    # WHEN it is encoded
    token = encode(position, state, request({"all": True}))

    # THEN it can go into a GET query unescaped, and a request carrying it is accepted
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
    assert len(token) <= MAX_CURSOR_CHARS
    assert with_cursor({"all": True}, token).cursor == token


def test_cursor_carries_over_to_a_next_invocation_with_force_delete():
    # GIVEN a cursor from the first invocation of a prefix sync
    event = {"prefix": "flags/", "delete_missing": True}
    token = encode(Position(cf_cursor="c", after="flags/x"), STATE, request(event))

    # WHEN the next invocation of the run uses it, adding force_delete
    later = request({**event, "cursor": token, "force_delete": True})

    # THEN it is accepted: force_delete does not decide which keys or records the run covers
    assert decode(later) == (Position(cf_cursor="c", after="flags/x"), STATE)


def test_duplicate_names_do_not_change_which_run_a_cursor_belongs_to():
    # GIVEN the same names, once with duplicates (which are dropped)
    token = encode(Position(offset=1), None, request({"key_names": ["a", "b", "a"]}))

    # WHEN the cursor is used with the list without duplicates
    # THEN it continues that run
    assert decode(with_cursor({"key_names": ["a", "b"]}, token)) == (Position(offset=1), None)


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
    token = encode(Position(cf_cursor="c", after="k", offset=1), STATE, request(issued_for))

    # WHEN it is used with a different one (a name offset or listing position
    # would point somewhere else there)
    with pytest.raises(ValidationError) as info:
        decode(with_cursor(used_with, token))

    # THEN it is refused as belonging to another request
    assert info.value.type == "VALIDATION_ERROR"
    assert OTHER_REQUEST in info.value.message


@pytest.mark.parametrize(
    ("issued_for", "used_with"),
    [
        ({"all": True, "dry_run": True}, {"all": True}),
        ({"all": True}, {"all": True, "dry_run": True}),
        ({"all": True, "delete_missing": True}, {"all": True}),
        ({"all": True, "delete_missing": True}, {"all": True, "delete_missing": False}),
        ({"all": True}, {"all": True, "delete_missing": True}),
    ],
    ids=["dry-to-real", "real-to-dry", "delete-to-default", "delete-to-keep", "default-to-delete"],
)
def test_cursor_of_a_run_with_other_dry_run_or_delete_missing_is_rejected(issued_for, used_with):
    # GIVEN a cursor issued for a run with one dry_run / delete_missing
    token = encode(Position(cf_cursor="c", after="k"), STATE, request(issued_for))

    # WHEN it is used by a run asking for another (a real run must not finish a
    # dry run, nor a run deleting what its earlier pages did not count)
    with pytest.raises(ValidationError) as info:
        decode(with_cursor(used_with, token))

    # THEN it is refused, naming what must match
    assert OTHER_REQUEST in info.value.message
    assert "dry_run" in info.value.message
    assert "delete_missing" in info.value.message


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
        {"v": 1},
        {"v": 3},
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
        "version-1",
        "version-3",
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
    forged = {**issued_fields({"all": True}, STATE), **change}

    # WHEN it is decoded
    with pytest.raises(ValidationError) as info:
        decode(with_cursor({"all": True}, raw_cursor(json.dumps(forged))))

    # THEN it is refused as bad input that names the cursor
    assert "cursor" in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("run_id", 7),
        ("run_id", None),
        ("started_at", ["2026"]),
        ("listed", -1),
        ("stored", "1990"),
        ("to_delete", 1.5),
        ("to_delete", True),
        ("pending", None),
        ("failed", -3),
        ("deletions_off", "yes"),
        ("deletions_off", 0),
    ],
)
def test_tampered_run_state_is_rejected(field, value):
    # GIVEN a genuine cursor of a run whose totals were edited (say, to slip a
    # deletion past the guard, or to clear "a page failed")
    forged = issued_fields({"all": True}, STATE)
    forged["r"][STATE_FIELDS.index(field)] = value

    # WHEN it is decoded
    with pytest.raises(ValidationError) as info:
        decode(with_cursor({"all": True}, raw_cursor(json.dumps(forged))))

    # THEN it is refused as a cursor this function never issued
    assert "cursor is not a next_cursor this function issued" in info.value.message


@pytest.mark.parametrize(
    "run", [[], ["only-an-id"], "a string", {"run_id": "x"}], ids=["empty", "short", "text", "map"]
)
def test_run_state_of_the_wrong_shape_is_rejected(run):
    # GIVEN a genuine cursor whose run state is not the list the function writes
    forged = {**issued_fields({"all": True}, STATE), "r": run}

    # WHEN it is decoded
    # THEN it is refused
    with pytest.raises(ValidationError):
        decode(with_cursor({"all": True}, raw_cursor(json.dumps(forged))))


def test_run_state_with_an_extra_total_is_rejected():
    # GIVEN a genuine cursor with one more value in its run state
    forged = issued_fields({"all": True}, STATE)
    forged["r"].append(5)

    # WHEN it is decoded
    # THEN it is refused
    with pytest.raises(ValidationError):
        decode(with_cursor({"all": True}, raw_cursor(json.dumps(forged))))


@pytest.mark.parametrize("literal", ["Infinity", "NaN", "-Infinity"])
def test_cursor_with_non_finite_offset_is_rejected(literal):
    # GIVEN a cursor whose offset is a JSON literal Python's parser accepts
    issued = issued_fields({"key_names": ["a", "b"]})
    text = json.dumps({**issued, "o": 0}).replace('"o": 0', f'"o": {literal}')

    # WHEN it is decoded
    # THEN it is refused
    with pytest.raises(ValidationError):
        decode(with_cursor({"key_names": ["a", "b"]}, raw_cursor(text)))
