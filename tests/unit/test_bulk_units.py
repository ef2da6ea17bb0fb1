"""Pieces of multi-key sync in isolation: cursors, key ranges, failure lists, replies.

``bulk.py``'s cursor helpers and ``_prefix_end``, ``BulkStats.fail``, and the
reply builders in ``replies.py``. The whole flow is covered by
``tests/integration/test_bulk_sync.py``; the few handler calls here only check
that a malformed cursor is refused as bad input (400), not as an internal error.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from bulk import (
    MAX_FAILURES_REPORTED,
    BulkResult,
    BulkStats,
    _decode_cursor,
    _encode_cursor,
    _fingerprint,
    _Position,
    _prefix_end,
)
from errors import NotFoundError, SyncError, ValidationError, ValueTooLargeError
from events import MAX_CURSOR_CHARS, SyncRequest, parse_event
from replies import bulk_document, bulk_statistics
from tests.unit.conftest import FakeContext

DEFAULT = "redirect-all-users-to-essentials"
LAMBDA_INFO = {"cold_start": False, "request_id": "req-1"}


def request(event: dict[str, Any]) -> SyncRequest:
    return parse_event(event, DEFAULT)


def fingerprint(event: dict[str, Any]) -> str:
    return _fingerprint(request(event))


def raw_cursor(text: str) -> str:
    """A cursor carrying arbitrary text, encoded as this function encodes its own."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii").rstrip("=")


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    import handler

    result: dict[str, Any] = handler.lambda_handler(event, FakeContext())
    return result


# --------------------------------------------------------------------------- cursors


@pytest.mark.parametrize(
    "position",
    [
        _Position(cf_cursor="6Ck1la0VxJ0djhidm1MdX2FyD", after="flags/0999"),
        _Position(cf_cursor=None, after="flags/last"),
        _Position(offset=300),
        _Position(cf_cursor="c", after="ключ/🙂 with spaces & ?=/+"),
        _Position(),
    ],
    ids=["listing", "last-page", "names-offset", "unicode-key", "start"],
)
def test_cursor_round_trips(position):
    # GIVEN where a run stopped, for a prefix selector
    fp = fingerprint({"prefix": "flags/"})

    # WHEN it is encoded as next_cursor and decoded by the next run
    cursor = _encode_cursor(position, fp)
    decoded = _decode_cursor(cursor, fp)

    # THEN the next run resumes at exactly the same place
    assert decoded == position


def test_cursor_is_url_safe_text_that_the_event_validator_accepts():
    # GIVEN a position after a maximal 512-byte key of 4-byte characters
    fp = fingerprint({"all": True})
    position = _Position(cf_cursor="x" * 200, after="🙂" * 128)

    # WHEN it is encoded
    cursor = _encode_cursor(position, fp)

    # THEN it can go into a GET query unescaped, and a request carrying it is accepted
    assert re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    assert len(cursor) <= MAX_CURSOR_CHARS
    assert request({"all": True, "cursor": cursor}).cursor == cursor


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
    cursor = _encode_cursor(_Position(cf_cursor="c", after="k", offset=1), fingerprint(issued_for))

    # WHEN it is used with a different one (a name offset or listing position
    # would point somewhere else there)
    with pytest.raises(ValidationError) as info:
        _decode_cursor(cursor, fingerprint(used_with))

    # THEN it is refused as belonging to another selector
    assert info.value.type == "VALIDATION_ERROR"
    assert "different key_names, prefix or all selector" in info.value.message


def test_fingerprint_ignores_cursor_delete_missing_and_continuation():
    # GIVEN the first run of a prefix sync and a continuation of it
    first = request({"prefix": "flags/"})
    later = request(
        {"prefix": "flags/", "cursor": "abc", "delete_missing": True, "continuation": 4}
    )

    # WHEN each one's fingerprint is taken
    # THEN they match, so the continuation accepts the first run's cursor
    assert _fingerprint(first) == _fingerprint(later)
    cursor = _encode_cursor(_Position(cf_cursor="c", after="flags/x"), _fingerprint(first))
    assert _decode_cursor(cursor, _fingerprint(later)) == _Position(cf_cursor="c", after="flags/x")


def test_duplicate_names_do_not_change_the_fingerprint():
    # GIVEN the same names, once with duplicates (which are dropped)
    # WHEN their fingerprints are taken
    # THEN a cursor from one continues the other
    assert fingerprint({"key_names": ["a", "b", "a"]}) == fingerprint({"key_names": ["a", "b"]})


@pytest.mark.parametrize(
    ("cursor", "payload"),
    [
        ("not a cursor!", None),
        ("é-non-ascii", None),
        ("@@@@", None),
        (base64.urlsafe_b64encode(b"\xff\xfe{").decode("ascii"), None),
        (None, "not json"),
        (None, "[1, 2]"),
        (None, '"a string"'),
        (None, "{}"),
        (None, '{"v": 2, "s": "FP"}'),
        (None, '{"s": "FP"}'),
        (None, '{"v": 1, "s": "FP", "c": 5}'),
        (None, '{"v": 1, "s": "FP", "a": ["k"]}'),
        (None, '{"v": 1, "s": "FP", "o": "ten"}'),
        (None, '{"v": 1, "s": "FP", "o": [1]}'),
        (None, '{"v": 1, "s": "FP", "o": NaN}'),
    ],
    ids=[
        "spaces",
        "non-ascii",
        "symbols",
        "not-utf8",
        "not-json",
        "json-list",
        "json-string",
        "empty-object",
        "version-2",
        "no-version",
        "cf-cursor-int",
        "after-list",
        "offset-text",
        "offset-list",
        "offset-nan",
    ],
)
def test_garbage_cursor_is_rejected(cursor, payload):
    # GIVEN a cursor this function never issued (where it is JSON, with the
    # right selector fingerprint, so only its shape is wrong)
    fp = fingerprint({"all": True})
    if payload is not None:
        cursor = raw_cursor(payload.replace("FP", fp))

    # WHEN it is decoded
    with pytest.raises(ValidationError) as info:
        _decode_cursor(cursor, fp)

    # THEN it is refused as bad input that names the cursor
    assert info.value.type == "VALIDATION_ERROR"
    assert "cursor" in info.value.message


def test_cursor_with_negative_offset_is_rejected():
    # GIVEN a cursor for named keys whose offset is negative
    fp = fingerprint({"key_names": ["a", "b"]})
    cursor = raw_cursor(json.dumps({"v": 1, "s": fp, "c": None, "a": None, "o": -5}))

    # WHEN it is decoded
    # THEN it is refused: no run stops before its first key
    with pytest.raises(ValidationError):
        _decode_cursor(cursor, fp)


def test_cursor_with_infinite_offset_is_a_validation_error(aws, cf):
    # GIVEN a cursor whose offset is JSON Infinity (Python's json accepts it)
    fp = fingerprint({"all": True})
    cursor = raw_cursor(f'{{"v":1,"s":"{fp}","o":Infinity}}')

    # WHEN the function is invoked with it
    response = invoke({"all": True, "cursor": cursor})

    # THEN it is refused as bad input
    assert response["error"]["type"] == "VALIDATION_ERROR"


def test_cursor_of_deeply_nested_json_is_a_validation_error(aws, cf):
    # GIVEN a cursor within the length limit that decodes to 3000 nested lists
    cursor = raw_cursor("[" * 3000)
    assert len(cursor) <= MAX_CURSOR_CHARS

    # WHEN the function is invoked with it
    response = invoke({"all": True, "cursor": cursor})

    # THEN it is refused as bad input rather than an internal error
    assert response["error"]["type"] == "VALIDATION_ERROR"


def test_cursor_with_offset_past_the_names_is_a_validation_error(aws, cf):
    # GIVEN a cursor for two named keys that claims to stop after the 7th
    fp = fingerprint({"key_names": ["a", "b"]})
    cursor = raw_cursor(json.dumps({"v": 1, "s": fp, "c": None, "a": None, "o": 7}))

    # WHEN the function is invoked with it
    response = invoke({"key_names": ["a", "b"], "cursor": cursor})

    # THEN it is refused as bad input (or treated as a finished run), not a crash
    assert response.get("error", {}).get("type", "VALIDATION_ERROR") == "VALIDATION_ERROR"


def test_cursor_of_another_selector_is_refused_by_the_handler_as_bad_input(aws, cf):
    # GIVEN a next_cursor from a prefix run
    cursor = _encode_cursor(
        _Position(cf_cursor="c", after="flags/a"), fingerprint({"prefix": "flags/"})
    )

    # WHEN it is sent with the whole-namespace selector
    response = invoke({"all": True, "cursor": cursor})

    # THEN the caller gets a validation error, not a sync from the wrong place
    assert response["success"] is False
    assert response["error"]["type"] == "VALIDATION_ERROR"


# ------------------------------------------------------------------------ key ranges


@pytest.mark.parametrize(
    ("prefix", "end"),
    [
        ("flags/", "flags0"),
        ("a", "b"),
        ("z", "{"),
        ("ключ", "клюш"),
        ("a\U0010ffff", "b"),
        ("ab\U0010ffff\U0010ffff", "ac"),
    ],
    ids=["slash", "letter", "z", "cyrillic", "ends-in-max", "ends-in-two-max"],
)
def test_prefix_end_is_the_next_string_after_the_prefix(prefix, end):
    # GIVEN a prefix
    # WHEN the end of its key range is computed
    # THEN it is the prefix with its last (non-maximal) character bumped
    assert _prefix_end(prefix) == end


def assert_range_covers(prefix: str) -> None:
    # keys that start with the prefix, including ones ending in high characters
    keys = [prefix + "a", prefix + "\U0010ffff", prefix + "\U0010ffff" * 3 + "z", prefix]
    end = _prefix_end(prefix)
    assert end is not None
    for key in keys:
        assert key < end
        assert key.encode("utf-8") < end.encode("utf-8")
    assert not end.startswith(prefix)


@pytest.mark.parametrize("prefix", ["flags/", "a\U0010ffff", "é", "x~", "🙂"], ids=repr)
def test_every_key_with_the_prefix_sorts_below_prefix_end(prefix):
    # GIVEN a prefix
    # WHEN the end of its key range is computed
    # THEN every key starting with the prefix sorts strictly below it, also as
    # UTF-8 bytes (DynamoDB's order), and the end itself is outside the prefix
    assert_range_covers(prefix)


def test_prefix_of_only_the_highest_character_has_no_upper_bound():
    # GIVEN a prefix made only of U+10FFFF, which has no next string at all
    # WHEN the end of its key range is computed
    # THEN there is none: the range runs to the end of the namespace
    assert _prefix_end("\U0010ffff") is None
    assert _prefix_end("\U0010ffff" * 2) is None


# ------------------------------------------------------------------- failure list


def test_fail_counts_every_failure_but_lists_a_bounded_number():
    # GIVEN a run where more keys fail than the reply lists
    stats = BulkStats()
    total = MAX_FAILURES_REPORTED + 25

    # WHEN each failure is recorded
    for i in range(total):
        stats.fail(f"key-{i:03d}", ValueTooLargeError(f"value {i} too large"))

    # THEN all are counted, but only the first MAX_FAILURES_REPORTED are listed, in order
    assert stats.records_failed == total
    assert len(stats.failures) == MAX_FAILURES_REPORTED == 50
    assert [f["key"] for f in stats.failures] == [f"key-{i:03d}" for i in range(50)]


def test_failure_entries_name_the_key_type_and_message():
    # GIVEN two different per-key failures
    stats = BulkStats()

    # WHEN they are recorded
    stats.fail("big", ValueTooLargeError("Value of 'big' is 500000 bytes"))
    stats.fail("gone", NotFoundError("Key 'gone' does not exist in KV"))

    # THEN each entry says which key failed, how (the stable type) and why
    assert stats.failures == [
        {"key": "big", "type": "VALUE_TOO_LARGE", "message": "Value of 'big' is 500000 bytes"},
        {"key": "gone", "type": "NOT_FOUND", "message": "Key 'gone' does not exist in KV"},
    ]


# ------------------------------------------------------------------------ statistics


def make_stats(**counts: int) -> BulkStats:
    stats = BulkStats()
    for name, value in counts.items():
        if name == "api_calls":
            stats.calls.add(api_calls=value)
        elif name == "retries":
            stats.calls.add(retries=value)
        elif name == "batches":
            stats.reads.calls = value
        else:
            setattr(stats, name, value)
    return stats


def test_bulk_statistics_reports_every_figure():
    # GIVEN a run that did a bit of everything
    stats = make_stats(
        keys_listed=120,
        keys_fetched=110,
        records_written=60,
        records_unchanged=40,
        records_deleted=5,
        records_failed=3,
        records_superseded=2,
        api_calls=7,
        retries=1,
        batches=4,
        dynamodb_writes=67,
    )

    # WHEN its statistics block is built
    block = bulk_statistics(stats, 1234.5678, "next-cursor", complete=False)

    # THEN every figure the issue lists is there, with the run's values
    assert block == {
        "execution_time_ms": 1234.57,
        "keys_listed": 120,
        "keys_fetched": 110,
        "records_written": 60,
        "records_unchanged": 40,
        "records_deleted": 5,
        "records_failed": 3,
        "records_superseded": 2,
        "cloudflare_api_calls": 7,
        "cloudflare_retries": 1,
        "dynamodb_batches": 4,
        "dynamodb_writes": 67,
        "records_processed": 115,
        "records_stored": 100,
        "success_rate": round(107 / 110, 4),
        "next_cursor": "next-cursor",
        "complete": False,
    }


@pytest.mark.parametrize(
    ("counts", "rate"),
    [
        ({}, 1.0),
        ({"records_unchanged": 10}, 1.0),
        ({"records_written": 3, "records_failed": 1}, 0.75),
        ({"records_failed": 4}, 0.0),
        ({"records_deleted": 1, "records_superseded": 1, "records_failed": 2}, 0.5),
        ({"records_written": 2, "records_failed": 1}, 0.6667),
    ],
    ids=["nothing", "all-unchanged", "one-in-four-failed", "all-failed", "mixed", "rounded"],
)
def test_success_rate_is_settled_records_over_all_attempted(counts, rate):
    # GIVEN a run with some outcomes
    stats = make_stats(**counts)

    # WHEN its statistics are built
    block = bulk_statistics(stats, 0.0, None, complete=True)

    # THEN success_rate is the share that did not fail (1.0 when there was nothing to do)
    assert block["success_rate"] == rate


def test_complete_run_has_no_next_cursor():
    # GIVEN a run that finished
    # WHEN its statistics are built
    block = bulk_statistics(BulkStats(), 5.0, None, complete=True)

    # THEN it says so and offers nothing to continue
    assert block["complete"] is True
    assert block["next_cursor"] is None


# -------------------------------------------------------------------------- document


def document(
    event: dict[str, Any],
    stats: BulkStats,
    *,
    complete: bool,
    next_cursor: str | None = None,
    continued: bool = False,
) -> dict[str, Any]:
    result = BulkResult(stats, next_cursor, complete=complete)
    block = bulk_statistics(stats, 10.0, next_cursor, complete=complete)
    return bulk_document(request(event), result, block, LAMBDA_INFO, continued)


def test_complete_run_without_failures_succeeds():
    # GIVEN a prefix run that wrote, kept and deleted records without failures
    stats = make_stats(keys_fetched=9, records_written=4, records_unchanged=5, records_deleted=2)

    # WHEN its reply is built
    doc = document({"prefix": "flags/"}, stats, complete=True)

    # THEN it is a success that says what happened and that the run is complete
    assert doc["success"] is True
    data = doc["data"]
    assert data["message"] == (
        "Synced 9 key(s): 4 written, 5 unchanged, 2 deleted, 0 failed; complete"
    )
    assert data["selector"] == {"prefix": "flags/"}
    assert data["complete"] is True
    assert data["next_cursor"] is None
    assert data["continued"] is False
    assert data["failed_keys"] == []
    assert data["failed_keys_truncated"] is False
    assert data["lambda"] == LAMBDA_INFO
    assert doc["statistics"]["records_written"] == 4


def test_failures_make_the_run_unsuccessful_and_are_listed():
    # GIVEN a run where one key's value was too large
    stats = make_stats(keys_fetched=3, records_written=2)
    stats.fail("huge", ValueTooLargeError("too large"))

    # WHEN its reply is built
    doc = document({"key_names": ["a", "b", "huge"]}, stats, complete=True)

    # THEN it is not a success, and the failed key is listed with its type
    assert doc["success"] is False
    assert doc["data"]["failed_keys"] == [
        {"key": "huge", "type": "VALUE_TOO_LARGE", "message": "too large"}
    ]
    assert doc["data"]["failed_keys_truncated"] is False
    assert "1 failed" in doc["data"]["message"]
    assert doc["data"]["selector"] == {"key_names": ["a", "b", "huge"]}


def test_more_failures_than_listed_are_flagged_as_truncated():
    # GIVEN a run with more failures than the reply lists
    stats = BulkStats()
    for i in range(MAX_FAILURES_REPORTED + 1):
        stats.fail(f"k{i}", SyncError("boom"))

    # WHEN its reply is built
    doc = document({"all": True}, stats, complete=True)

    # THEN the list is bounded and flagged as truncated, while the count is exact
    assert len(doc["data"]["failed_keys"]) == MAX_FAILURES_REPORTED
    assert doc["data"]["failed_keys_truncated"] is True
    assert doc["statistics"]["records_failed"] == MAX_FAILURES_REPORTED + 1
    assert f"{MAX_FAILURES_REPORTED + 1} failed" in doc["data"]["message"]


def test_stopped_run_says_to_pass_next_cursor():
    # GIVEN a run that stopped before the deadline and did not continue itself
    # WHEN its reply is built
    doc = document({"all": True}, make_stats(keys_fetched=1000), complete=False, next_cursor="cur")

    # THEN it succeeded so far, and tells the caller how to continue
    assert doc["success"] is True
    assert doc["data"]["message"].endswith(
        "stopped before the deadline; pass next_cursor to continue"
    )
    assert doc["data"]["next_cursor"] == "cur"
    assert doc["data"]["complete"] is False
    assert doc["data"]["continued"] is False


def test_continued_run_says_it_continues_in_a_new_invocation():
    # GIVEN a run that stopped and started its own continuation
    # WHEN its reply is built
    doc = document(
        {"prefix": "flags/"}, BulkStats(), complete=False, next_cursor="cur", continued=True
    )

    # THEN it says the sync goes on by itself
    assert doc["data"]["message"].endswith("continuing in a new invocation")
    assert doc["data"]["continued"] is True
    assert doc["data"]["next_cursor"] == "cur"
