"""Multi-key selectors in events (``kv_sync.events``).

``key_names``, ``prefix`` and ``all`` arrive by direct invocation (or a scheduled
rule's constant input, which is the same shape), a Function URL POST body or a
Function URL GET query. Bad input must be a ``VALIDATION_ERROR`` (400) that says
what to fix, before anything reaches Cloudflare or DynamoDB.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kv_sync.errors import ValidationError
from kv_sync.events import ALLOWED_FIELDS, parse_event
from kv_sync.model import SyncRequest, Trigger
from tests.support.function import load_event
from tests.support.function import url_get as get
from tests.support.function import url_post as post

DEFAULT = "redirect-all-users-to-essentials"
SELECTOR_VALUES: dict[str, Any] = {
    "key_name": "classic-domain",
    "key_names": ["a", "b"],
    "prefix": "flags/",
    "all": True,
}


def parse(event: object) -> SyncRequest:
    return parse_event(event, DEFAULT)


def rejected(event: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse(event)
    assert info.value.type == "VALIDATION_ERROR"
    assert info.value.http_status == 400
    return info.value


# --------------------------------------------------------------------- selectors


@pytest.mark.parametrize("via", ["direct", "post", "post_base64"])
def test_key_names_select_those_keys(via):
    # GIVEN a request for three named keys, sent each way a caller can send a body
    fields = {"key_names": ["flags/a", "flags/b", "other"]}
    event = {
        "direct": fields,
        "post": post(fields),
        "post_base64": post(fields, base64_encoded=True),
    }[via]

    # WHEN it is parsed
    request = parse(event)

    # THEN exactly those keys are selected, as a multi-key sync
    assert request.key_names == ("flags/a", "flags/b", "other")
    assert request.is_bulk is True
    assert request.key_name is None
    assert request.prefix is None
    assert request.all_keys is False


@pytest.mark.parametrize("via", ["direct", "post", "get"])
def test_prefix_selects_a_prefix(via):
    # GIVEN a prefix sync sent directly, as a POST body or as a GET query
    event = {
        "direct": {"prefix": "flags/"},
        "post": post({"prefix": "flags/"}),
        "get": get({"prefix": "flags/"}),
    }[via]

    # WHEN it is parsed
    request = parse(event)

    # THEN that prefix is synced and nothing else is selected
    assert request.prefix == "flags/"
    assert request.is_bulk is True
    assert request.key_name is None
    assert request.key_names is None
    assert request.all_keys is False


@pytest.mark.parametrize("via", ["direct", "post", "get"])
def test_all_selects_the_whole_namespace(via):
    # GIVEN a whole-namespace sync sent directly, as a POST body or as ?all=true
    event = {
        "direct": {"all": True},
        "post": post({"all": True}),
        "get": get({"all": "true"}),
    }[via]

    # WHEN it is parsed
    request = parse(event)

    # THEN the whole namespace is selected
    assert request.all_keys is True
    assert request.is_bulk is True
    assert request.key_name is None
    assert request.prefix is None
    assert request.key_names is None


def test_function_url_triggers_are_kept_for_the_reply_shape():
    # GIVEN the same selector by direct invocation and by Function URL
    # WHEN both are parsed
    direct = parse({"all": True})
    url = parse(post({"all": True}))

    # THEN each remembers its trigger (the URL one gets an HTTP reply)
    assert direct.trigger is Trigger.DIRECT
    assert url.trigger is Trigger.FUNCTION_URL


def test_key_name_alone_is_still_a_single_key_sync():
    # GIVEN the pre-existing single-key event
    # WHEN it is parsed
    request = parse(load_event("directInvokeEvent.json"))

    # THEN it is a single-key sync, exactly as before
    assert request.key_name == "classic-domain"
    assert request.is_bulk is False
    assert request.cursor is None
    assert request.delete_missing is None


@pytest.mark.parametrize("value", ["TRUE", " true ", "True"])
def test_get_all_accepts_true_in_any_case(value):
    # GIVEN ?all=TRUE written in another case or with spaces
    # WHEN it is parsed
    request = parse(get({"all": value}))

    # THEN it is the whole-namespace sync
    assert request.all_keys is True


@pytest.mark.parametrize("value", ["false", "FALSE"])
def test_get_all_false_is_rejected(value):
    # GIVEN ?all=false, which selects nothing
    # WHEN it is parsed
    error = rejected(get({"all": value}))

    # THEN it is refused, saying all must be true
    assert "all must be true" in error.message


@pytest.mark.parametrize("value", ["yes", "1", "", "on"])
def test_get_all_with_a_non_boolean_word_is_rejected(value):
    # GIVEN ?all= with a word that is neither true nor false
    # WHEN it is parsed
    error = rejected(get({"all": value}))

    # THEN the message says true or false is needed
    assert "all must be true or false" in error.message


@pytest.mark.parametrize(("text", "expected"), [("false", False), ("true", True), ("False", False)])
def test_get_delete_missing_is_read_as_a_boolean(text, expected):
    # GIVEN a GET prefix sync with delete_missing in the query string
    # WHEN it is parsed
    request = parse(get({"prefix": "flags/", "delete_missing": text}))

    # THEN the text becomes the boolean the caller meant (not a truthy string)
    assert request.delete_missing is expected
    assert request.wants_delete_missing(default=not expected) is expected


def test_get_delete_missing_with_a_non_boolean_word_is_rejected():
    # GIVEN ?delete_missing=maybe
    # WHEN it is parsed
    error = rejected(get({"all": "true", "delete_missing": "maybe"}))

    # THEN it is refused, naming the field
    assert "delete_missing must be true or false" in error.message


def test_get_cursor_is_passed_through():
    # GIVEN a GET continuing a namespace sync with next_cursor from an earlier reply
    # WHEN it is parsed
    request = parse(get({"all": "true", "cursor": "eyJ2IjoxfQ"}))

    # THEN the cursor is kept as given
    assert request.cursor == "eyJ2IjoxfQ"
    assert request.all_keys is True


@pytest.mark.parametrize("value", ["a", "a,b", '["a","b"]'])
def test_get_key_names_is_rejected_pointing_to_post(value):
    # GIVEN key_names in a GET query, which cannot carry a JSON list
    # WHEN it is parsed
    error = rejected(get({"key_names": value}))

    # THEN the caller is told to use a POST body instead of guessing a list syntax
    assert "key_names" in error.message
    assert "POST" in error.message


def test_scheduled_rule_constant_input_can_carry_a_selector():
    # GIVEN an EventBridge rule whose constant input is a prefix selector
    # (the rule's input replaces the event, so it arrives as a plain object)
    event = {"prefix": "flags/", "delete_missing": True}

    # WHEN it is parsed
    request = parse(event)

    # THEN the prefix sync with deletion is what runs
    assert request.prefix == "flags/"
    assert request.delete_missing is True


# --------------------------------------------------------------- combining selectors


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("key_name", "key_names"),
        ("key_name", "prefix"),
        ("key_name", "all"),
        ("key_names", "prefix"),
        ("key_names", "all"),
        ("prefix", "all"),
    ],
)
def test_two_selectors_are_rejected_naming_both(first, second):
    # GIVEN an event with two selectors at once
    event = {first: SELECTOR_VALUES[first], second: SELECTOR_VALUES[second]}

    # WHEN it is parsed
    error = rejected(event)

    # THEN the message says to use only one and names the two that were given
    assert error.message.startswith("Use only one of")
    got = error.message.split("got", 1)[1]
    assert first in got
    assert second in got
    assert {first, second} == {name.strip() for name in got.split(",")}


def test_all_four_selectors_in_a_post_body_are_rejected_naming_each():
    # GIVEN a Function URL body holding every selector
    # WHEN it is parsed
    error = rejected(post(SELECTOR_VALUES))

    # THEN every selector given is named
    got = error.message.split("got", 1)[1]
    assert {name.strip() for name in got.split(",")} == set(SELECTOR_VALUES)


def test_get_query_combining_prefix_and_all_is_rejected():
    # GIVEN ?prefix=flags/&all=true
    # WHEN it is parsed
    error = rejected(get({"prefix": "flags/", "all": "true"}))

    # THEN it is refused as two selectors
    assert "Use only one of" in error.message
    assert "prefix, all" in error.message


# ------------------------------------------------------------------------------ all


@pytest.mark.parametrize(
    "value", [False, "true", "True", 1, 0, None, [True], {"value": True}], ids=repr
)
@pytest.mark.parametrize("via", ["direct", "post"])
def test_all_must_be_json_true(via, value):
    # GIVEN "all" holding anything but the JSON boolean true (a string "true" included)
    fields = {"all": value}
    event = fields if via == "direct" else post(fields)

    # WHEN it is parsed
    error = rejected(event)

    # THEN it is refused rather than syncing the namespace by accident
    assert "all must be true" in error.message


# ------------------------------------------------------------------------ key_names


def test_empty_key_names_list_is_rejected():
    # GIVEN an empty list of names
    # WHEN it is parsed
    error = rejected({"key_names": []})

    # THEN the allowed range and the count are stated
    assert "1 to 1000" in error.message
    assert "got 0" in error.message


def test_1000_key_names_are_accepted():
    # GIVEN the maximum of 1000 names
    names = [f"key-{i:04d}" for i in range(1000)]

    # WHEN they are parsed
    request = parse({"key_names": names})

    # THEN all are kept, in order
    assert request.key_names == tuple(names)


def test_1001_key_names_are_rejected():
    # GIVEN one name more than the maximum
    names = [f"key-{i:04d}" for i in range(1001)]

    # WHEN they are parsed
    error = rejected({"key_names": names})

    # THEN the limit and the count are stated
    assert "1 to 1000" in error.message
    assert "got 1001" in error.message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [("flags/a", "str"), ({"a": 1}, "dict"), (None, "NoneType"), (3, "int"), (True, "bool")],
)
def test_key_names_that_is_not_a_list_is_rejected(value, type_name):
    # GIVEN key_names that is a single string, an object or another non-list
    # WHEN it is parsed
    error = rejected({"key_names": value})

    # THEN the message asks for a list and says what was sent
    assert "key_names must be a list" in error.message
    assert type_name in error.message


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "must not be empty"),
        ("x" * 513, "513 bytes"),
        ("..", "'.' or '..'"),
        ("tab\there", "control characters"),
        (42, "must be a string"),
        (None, "must be a string"),
    ],
    ids=["empty", "too-long", "dotdot", "control", "int", "null"],
)
def test_bad_name_in_key_names_is_reported_with_its_index(bad, reason):
    # GIVEN a list whose third name is invalid
    names = ["ok-1", "ok-2", bad, "ok-4"]

    # WHEN it is parsed
    error = rejected({"key_names": names})

    # THEN the message points at index 2 and says what is wrong with it
    assert error.message.startswith("key_names[2]:")
    assert reason in error.message


def test_first_bad_name_is_the_one_reported():
    # GIVEN a list with two bad names
    # WHEN it is parsed
    error = rejected({"key_names": ["ok", "", "fine", "\x00"]})

    # THEN the first bad one is reported
    assert error.message.startswith("key_names[1]:")


def test_bad_name_in_a_post_body_is_reported_with_its_index():
    # GIVEN a Function URL body whose last name has a control character
    # WHEN it is parsed
    error = rejected(post({"key_names": ["a", "b", "c\nd"]}))

    # THEN the index is named
    assert "key_names[2]" in error.message


def test_duplicate_key_names_are_synced_once_in_first_seen_order():
    # GIVEN a list naming some keys more than once
    # WHEN it is parsed
    request = parse({"key_names": ["b", "a", "b", "c", "a", "b"]})

    # THEN each key is kept once, where it first appeared
    assert request.key_names == ("b", "a", "c")


def test_key_names_that_differ_only_in_case_are_distinct():
    # GIVEN names that differ only in case (KV keys are case-sensitive)
    # WHEN they are parsed
    request = parse({"key_names": ["Flag", "flag"]})

    # THEN both are kept
    assert request.key_names == ("Flag", "flag")


# --------------------------------------------------------------------------- prefix


def test_empty_prefix_is_rejected_pointing_to_all():
    # GIVEN an empty prefix, which would mean the whole namespace
    # WHEN it is parsed
    error = rejected({"prefix": ""})

    # THEN the caller is pointed at {"all": true}
    assert "prefix must not be empty" in error.message
    assert '"all": true' in error.message


def test_prefix_of_512_bytes_is_accepted():
    # GIVEN a prefix of exactly the maximum key length
    # WHEN it is parsed
    request = parse({"prefix": "p" * 512})

    # THEN it is accepted
    assert request.prefix == "p" * 512


@pytest.mark.parametrize(
    ("prefix", "size"),
    [("p" * 513, 513), ("é" * 257, 514)],
    ids=["ascii", "two-byte-chars"],
)
def test_prefix_over_512_bytes_is_rejected(prefix, size):
    # GIVEN a prefix longer than any KV key can be (counted in UTF-8 bytes)
    # WHEN it is parsed
    error = rejected({"prefix": prefix})

    # THEN the size and the limit are stated
    assert error.message == f"prefix is {size} bytes; KV keys are at most 512"


@pytest.mark.parametrize("char", ["\x00", "\n", "\x1f", "\x7f", "\x85", "\x9f"])
def test_prefix_with_control_characters_is_rejected(char):
    # GIVEN a prefix holding a control character
    # WHEN it is parsed
    error = rejected({"prefix": f"flags{char}/"})

    # THEN it is refused for that reason
    assert "prefix must not contain control characters" in error.message


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(5, "int"), (None, "NoneType"), (["flags/"], "list"), (True, "bool"), ({}, "dict")],
)
def test_non_string_prefix_is_rejected(value, type_name):
    # GIVEN a prefix that is not a string
    # WHEN it is parsed
    error = rejected({"prefix": value})

    # THEN the message says a string is needed and what was sent
    assert "prefix must be a string" in error.message
    assert type_name in error.message


def test_prefix_with_a_lone_surrogate_is_rejected():
    # GIVEN a POST body whose prefix escapes a lone surrogate
    # WHEN it is parsed
    error = rejected(post('{"prefix": "flags/\\ud800"}'))

    # THEN it is refused as invalid UTF-8, not a crash
    assert "UTF-8" in error.message


def test_unicode_prefix_is_accepted():
    # GIVEN a prefix in another script
    # WHEN it is parsed from a POST body
    request = parse(post({"prefix": "флаги/"}))

    # THEN it is kept as given
    assert request.prefix == "флаги/"


# --------------------------------------------------------------------------- cursor


@pytest.mark.parametrize("selector", ["key_names", "prefix", "all"])
def test_cursor_is_kept_for_bulk_selectors(selector):
    # GIVEN a multi-key selector with the next_cursor of an earlier run
    # WHEN it is parsed
    request = parse({selector: SELECTOR_VALUES[selector], "cursor": "abc123"})

    # THEN the cursor is kept to continue from
    assert request.cursor == "abc123"


@pytest.mark.parametrize(
    "event",
    [{"key_name": "classic-domain", "cursor": "abc"}, {"cursor": "abc"}],
    ids=["key_name", "default-key"],
)
def test_cursor_for_a_single_key_sync_is_rejected(event):
    # GIVEN a cursor with a single key (named or the default)
    # WHEN it is parsed
    error = rejected(event)

    # THEN the caller learns a cursor only continues a multi-key sync
    assert "cursor continues a key_names, prefix or all sync only" in error.message


@pytest.mark.parametrize("cursor", ["", 5, ["abc"], {"c": "abc"}, True, "c" * 4097], ids=repr)
def test_bad_cursor_is_rejected(cursor):
    # GIVEN an empty, oversized or non-string cursor
    # WHEN it is parsed
    error = rejected({"all": True, "cursor": cursor})

    # THEN the caller is told to pass the next_cursor of a previous run
    assert "cursor must be the non-empty next_cursor of a previous run" in error.message


def test_null_cursor_means_a_first_call():
    # GIVEN a caller that loops by sending back next_cursor, null on the first call
    # WHEN it is parsed
    request = parse({"all": True, "cursor": None})

    # THEN it starts from the beginning
    assert request.cursor is None
    assert request.all_keys is True


def test_cursor_of_4096_characters_is_accepted():
    # GIVEN a cursor at the maximum length
    # WHEN it is parsed
    request = parse({"prefix": "flags/", "cursor": "c" * 4096})

    # THEN it is accepted (its contents are checked when the sync decodes it)
    assert request.cursor == "c" * 4096


# ------------------------------------------------------------------- delete_missing


@pytest.mark.parametrize("value", [True, False])
@pytest.mark.parametrize("via", ["direct", "post"])
def test_delete_missing_boolean_is_kept(via, value):
    # GIVEN delete_missing given explicitly
    fields = {"prefix": "flags/", "delete_missing": value}
    event = fields if via == "direct" else post(fields)

    # WHEN it is parsed
    request = parse(event)

    # THEN the caller's choice is kept
    assert request.delete_missing is value


@pytest.mark.parametrize("value", ["true", "false", 1, 0, [True], {}], ids=repr)
def test_non_boolean_delete_missing_is_rejected(value):
    # GIVEN delete_missing that is not a JSON boolean (a string "false" would be truthy)
    # WHEN it is parsed
    error = rejected({"all": True, "delete_missing": value})

    # THEN it is refused, naming the field and the type sent
    assert "delete_missing must be true or false" in error.message
    assert type(value).__name__ in error.message


def test_delete_missing_works_with_a_single_key_too():
    # GIVEN a single-key sync asking to delete the record if the key is gone
    # WHEN it is parsed
    request = parse({"key_name": "classic-domain", "delete_missing": True})

    # THEN the flag is kept
    assert request.delete_missing is True
    assert request.is_bulk is False


@pytest.mark.parametrize("default", [True, False])
def test_wants_delete_missing_follows_the_deployment_default_when_not_given(default):
    # GIVEN a request that does not mention delete_missing
    request = parse({"all": True})

    # WHEN asked whether to delete, under each deployment default
    # THEN the deployment's default decides
    assert request.delete_missing is None
    assert request.wants_delete_missing(default) is default


@pytest.mark.parametrize(("given", "default"), [(True, False), (False, True)])
def test_explicit_delete_missing_overrides_the_default(given, default):
    # GIVEN a request that says delete_missing explicitly, against the default
    request = parse({"all": True, "delete_missing": given})

    # WHEN asked whether to delete
    # THEN the caller's explicit choice wins
    assert request.wants_delete_missing(default) is given


def test_null_delete_missing_means_the_default():
    # GIVEN delete_missing: null
    request = parse({"all": True, "delete_missing": None})

    # WHEN asked whether to delete
    # THEN the deployment's default applies
    assert request.wants_delete_missing(True) is True
    assert request.wants_delete_missing(False) is False


# ------------------------------------------------------- the removed continuation field


@pytest.mark.parametrize("via", ["direct", "scheduled"])
def test_continuation_field_is_now_an_unknown_field(via):
    # GIVEN an event of the removed self-invocation chain, which counted its links in
    # "continuation" (sent directly, or as the chain sent it: a scheduled event's detail)
    fields = {"prefix": "flags/", "cursor": "abc", "continuation": 1}
    event = {
        "direct": fields,
        "scheduled": {"detail-type": "Scheduled Event", "source": "kv-sync", "detail": fields},
    }[via]

    # WHEN it is parsed
    error = rejected(event)

    # THEN it is refused like any field the function does not know, naming it
    assert "Unknown field(s) 'continuation'" in error.message
    assert "continuation" not in ALLOWED_FIELDS


# ------------------------------------------------------------------- unknown fields


@pytest.mark.parametrize("via", ["direct", "post", "get"])
def test_unknown_field_message_lists_every_allowed_field(via):
    # GIVEN a misspelt selector next to a valid one
    fields: dict[str, Any] = {"all": True, "keynames": "x"}
    event = {
        "direct": fields,
        "post": post(fields),
        "get": get({"all": "true", "keynames": "x"}),
    }[via]

    # WHEN it is parsed
    error = rejected(event)

    # THEN the bad field and every field the function understands are named
    assert "'keynames'" in error.message
    allowed = error.message.split("allowed:", 1)[1]
    for name in (
        "key_name",
        "key_names",
        "prefix",
        "all",
        "cursor",
        "delete_missing",
        "dry_run",
        "force_delete",
    ):
        assert name in allowed
    assert set(ALLOWED_FIELDS) == {name.strip() for name in allowed.split(",")}


# ------------------------------------------------------------------------- selector()


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"key_names": ["b", "a", "b"]}, {"key_names": ["b", "a"]}),
        ({"prefix": "flags/"}, {"prefix": "flags/"}),
        ({"all": True}, {"all": True}),
        ({"key_name": "classic-domain"}, {"key_name": "classic-domain"}),
        ({}, {"key_name": DEFAULT}),
    ],
    ids=["key_names", "prefix", "all", "key_name", "default"],
)
def test_selector_echoes_what_was_asked_for(event, expected):
    # GIVEN a request for each kind of selector
    request = parse(event)

    # WHEN its selector is taken (it is echoed in replies)
    selector = request.selector()

    # THEN it has the event's shape and feeds back into parse_event unchanged
    assert selector == expected
    assert json.loads(json.dumps(selector)) == expected
    assert parse(selector).selector() == expected


def test_selector_leaves_out_cursor_and_options():
    # GIVEN a request with a cursor and every option
    request = parse(
        {
            "prefix": "flags/",
            "cursor": "abc",
            "delete_missing": True,
            "dry_run": True,
            "force_delete": True,
        }
    )

    # WHEN its selector is taken
    # THEN only the selector itself is there
    assert request.selector() == {"prefix": "flags/"}


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        ({"prefix": "flags/"}, {"prefix": "flags/"}),
        ({"key_names": ["a", "b"], "delete_missing": True}, {"key_names": ["a", "b"]}),
        ({"all": True}, {"all": True}),
        ({"key_name": "classic-domain"}, {"key_name": "classic-domain"}),
        ({}, {"key_name": "redirect-all-users-to-essentials"}),
    ],
    ids=["prefix", "key_names", "all", "key_name", "empty"],
)
def test_scheduled_event_detail_carries_the_selector(detail, expected):
    # GIVEN a scheduled rule whose constant input puts a selector in "detail"
    event = {**load_event("scheduledEvent.json"), "detail": detail}

    # WHEN it is parsed
    request = parse(event)

    # THEN the selector applies, and the run keeps schedule semantics (raise to retry)
    assert request.selector() == expected
    assert request.trigger.value == "schedule"


def test_scheduled_event_detail_is_validated_like_an_event():
    # GIVEN a scheduled event whose detail holds two selectors
    event = {**load_event("scheduledEvent.json"), "detail": {"prefix": "a", "all": True}}

    # WHEN it is parsed
    error = rejected(event)

    # THEN it is refused like any other event
    assert "Use only one of" in error.message
