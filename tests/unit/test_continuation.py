"""Self-continuation of a long multi-key sync (``kv_sync.continuation``).

The Lambda client is stubbed with botocore's ``Stubber``; a ``provide-client-params``
hook records what each Invoke was asked to send, so a test can tell "no call" from
"a call that failed".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from kv_sync import runtime
from kv_sync.continuation import continue_run
from kv_sync.events import parse_event
from kv_sync.model import SyncRequest
from kv_sync.settings import Settings, load_settings
from local.lambda_context import FUNCTION_ARN, LambdaContext

ALIAS_ARN = f"{FUNCTION_ARN}:live"
CURSOR = "eyJ2IjoxLCJzIjoiYWJjIn0"


@pytest.fixture
def invokes() -> Iterator[tuple[Stubber, list[dict[str, Any]]]]:
    """The stubbed Lambda client and the parameters of every Invoke it received."""
    client = runtime.client("lambda")
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    client.meta.events.register("provide-client-params.lambda.Invoke", record)
    with Stubber(client) as stubber:
        yield stubber, calls
    client.meta.events.unregister("provide-client-params.lambda.Invoke", record)


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    """Settings from the test environment plus ``env``, ignoring the developer's shell."""
    for name in ("DELETE_MISSING", "SELF_INVOKE_CONTINUATION", "MAX_CONTINUATIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def request(event: dict[str, Any]) -> SyncRequest:
    return parse_event(event, "redirect-all-users-to-essentials")


def sent_event(call: dict[str, Any]) -> dict[str, Any]:
    """The whole event the continuation was invoked with."""
    data: dict[str, Any] = json.loads(call["Payload"])
    return data


def payload(call: dict[str, Any]) -> dict[str, Any]:
    """The selector and continuation fields, carried in a scheduled event's detail."""
    data: dict[str, Any] = sent_event(call)["detail"]
    return data


def test_continuation_is_shaped_like_a_scheduled_event(monkeypatch, invokes):
    # GIVEN self-continuation on and an unfinished prefix run
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true")
    expect_invoke(stubber)

    # WHEN it is continued
    continue_run(request({"prefix": "flags/"}), CURSOR, current, context())

    # THEN the event is a scheduled one: nobody waits for an asynchronous reply, so
    # retryable failures of the continued run raise for Lambda's retries
    event = sent_event(calls[0])
    assert event["detail-type"] == "Scheduled Event"
    assert event["source"] == "kv-sync.continuation"
    following = request(event)
    assert following.trigger.value == "schedule"
    assert following.prefix == "flags/"


def context(arn: str = FUNCTION_ARN) -> Any:
    """The test Lambda context, invoked by ``arn``."""
    return LambdaContext(invoked_function_arn=arn)


def expect_invoke(stubber: Stubber) -> None:
    stubber.add_response(
        "invoke",
        {"StatusCode": 202},
        {"FunctionName": ANY, "InvocationType": "Event", "Payload": ANY},
    )


def test_disabled_by_default_makes_no_call(monkeypatch, invokes):
    # GIVEN a deployment that does not set SELF_INVOKE_CONTINUATION
    _, calls = invokes
    monkeypatch.delenv("SELF_INVOKE_CONTINUATION", raising=False)

    # WHEN a run stops before the deadline with a cursor
    started = continue_run(request({"all": True}), CURSOR, load_settings(), context())

    # THEN no continuation is started; the caller continues with next_cursor
    assert started is False
    assert calls == []


def test_explicitly_disabled_makes_no_call(monkeypatch, invokes):
    # GIVEN SELF_INVOKE_CONTINUATION=false
    _, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="false")

    # WHEN a run stops with a cursor
    started = continue_run(request({"prefix": "flags/"}), CURSOR, current, context())

    # THEN nothing is invoked
    assert started is False
    assert calls == []


def test_enabled_invokes_this_function_asynchronously(monkeypatch, invokes):
    # GIVEN self-continuation enabled
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true")
    expect_invoke(stubber)

    # WHEN a prefix run stops with a cursor
    started = continue_run(request({"prefix": "flags/"}), CURSOR, current, context())

    # THEN one asynchronous (Event) invocation of this very function is made
    assert started is True
    stubber.assert_no_pending_responses()
    assert len(calls) == 1
    assert calls[0]["FunctionName"] == FUNCTION_ARN
    assert calls[0]["InvocationType"] == "Event"


def test_invokes_the_arn_it_was_invoked_by(monkeypatch, invokes):
    # GIVEN a function invoked through an alias
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true")
    expect_invoke(stubber)
    aliased = context(ALIAS_ARN)

    # WHEN it continues a run
    continue_run(request({"all": True}), CURSOR, current, aliased)

    # THEN the continuation goes to the same alias, so it runs the same code
    assert calls[0]["FunctionName"] == ALIAS_ARN


@pytest.mark.parametrize(
    "event",
    [{"prefix": "flags/"}, {"all": True}, {"key_names": ["b", "a", "c"]}],
    ids=["prefix", "all", "key_names"],
)
def test_payload_carries_the_selector_cursor_and_next_count(monkeypatch, invokes, event):
    # GIVEN self-continuation enabled and a first invocation of a run
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="1")
    expect_invoke(stubber)

    # WHEN it stops with a cursor
    continue_run(request(event), CURSOR, current, context())

    # THEN the new invocation gets the same selector, the cursor and continuation 1,
    # and no delete_missing, so it keeps following the deployment default
    assert payload(calls[0]) == {**event, "cursor": CURSOR, "continuation": 1}


def test_payload_is_an_event_the_function_accepts(monkeypatch, invokes):
    # GIVEN a continued run of named keys with delete_missing given
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true")
    expect_invoke(stubber)
    original = request({"key_names": ["x", "y"], "delete_missing": True, "cursor": "old"})

    # WHEN the continuation's payload is parsed as the next invocation will parse it
    continue_run(original, CURSOR, current, context())
    following = request(sent_event(calls[0]))

    # THEN it is the same sync, one step further
    assert following.key_names == ("x", "y")
    assert following.cursor == CURSOR
    assert following.continuation == 1
    assert following.delete_missing is True


def test_continuation_count_goes_up_by_one(monkeypatch, invokes):
    # GIVEN the 7th continuation of a run
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true")
    expect_invoke(stubber)
    seventh = request({"all": True, "cursor": "old", "continuation": 7})

    # WHEN it continues in turn
    continue_run(seventh, CURSOR, current, context())

    # THEN the next one is the 8th, and uses the new cursor, not the old one
    assert payload(calls[0])["continuation"] == 8
    assert payload(calls[0])["cursor"] == CURSOR


@pytest.mark.parametrize("delete_missing", [True, False])
def test_explicit_delete_missing_is_passed_on(monkeypatch, invokes, delete_missing):
    # GIVEN a run that asked for delete_missing explicitly (against the default, too)
    stubber, calls = invokes
    current = settings(
        monkeypatch,
        SELF_INVOKE_CONTINUATION="true",
        DELETE_MISSING=str(not delete_missing).lower(),
    )
    expect_invoke(stubber)
    run = request({"prefix": "flags/", "delete_missing": delete_missing})

    # WHEN it continues
    continue_run(run, CURSOR, current, context())

    # THEN the continuation keeps the caller's choice
    assert payload(calls[0])["delete_missing"] is delete_missing


@pytest.mark.parametrize("flag", ["dry_run", "force_delete"])
def test_dry_run_and_force_delete_are_passed_on(monkeypatch, invokes, flag):
    # GIVEN a dry run, or a run forced past the deletion guard, that stops with a cursor
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true")
    expect_invoke(stubber)
    run = request({"all": True, "delete_missing": True, flag: True})

    # WHEN it continues
    continue_run(run, CURSOR, current, context())
    following = request(sent_event(calls[0]))

    # THEN the continuation is the same kind of run: a dry run still writes nothing
    # (and its cursor is refused by a real run), a forced run is still forced at its end
    assert payload(calls[0])[flag] is True
    assert getattr(following, flag) is True
    assert following.delete_missing is True


def test_continues_below_max_continuations(monkeypatch, invokes):
    # GIVEN MAX_CONTINUATIONS=3 and the 2nd continuation running
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true", MAX_CONTINUATIONS="3")
    expect_invoke(stubber)

    # WHEN it stops with a cursor
    started = continue_run(
        request({"all": True, "cursor": "old", "continuation": 2}), CURSOR, current, context()
    )

    # THEN the 3rd continuation is started
    assert started is True
    assert payload(calls[0])["continuation"] == 3


@pytest.mark.parametrize(("limit", "count"), [(3, 3), (3, 4), (0, 0)])
def test_max_continuations_reached_makes_no_call(monkeypatch, invokes, limit, count):
    # GIVEN a run that has already continued MAX_CONTINUATIONS times (or more)
    _, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true", MAX_CONTINUATIONS=str(limit))
    run = request({"all": True, "cursor": "old", "continuation": count})

    # WHEN it stops with a cursor again
    started = continue_run(run, CURSOR, current, context())

    # THEN it does not continue, so a sync that never finishes cannot loop forever
    assert started is False
    assert calls == []


def test_max_continuations_reached_is_logged_with_the_cursor(monkeypatch, invokes, log_stream):
    # GIVEN a run at its continuation limit
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true", MAX_CONTINUATIONS="1")
    run = request({"all": True, "cursor": "old", "continuation": 1})

    # WHEN it stops with a cursor
    continue_run(run, CURSOR, current, context())

    # THEN the log says why it stopped and holds the cursor to resume by hand
    records = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    warning = next(r for r in records if "MAX_CONTINUATIONS" in r["message"])
    assert warning["level"] == "WARNING"
    # (under the reply's own name for it, so one search finds both)
    assert warning.get("next_cursor") == CURSOR, f"no next_cursor field in {warning}"


@pytest.mark.parametrize(
    ("code", "status", "logged"),
    [
        ("ResourceNotFoundException", 404, "ResourceNotFoundException"),
        ("AccessDeniedException", 403, "ClientError"),
        ("TooManyRequestsException", 429, "TooManyRequestsException"),
        ("ServiceException", 500, "ServiceException"),
    ],
)
def test_invoke_failure_returns_false_without_raising(
    monkeypatch, invokes, log_stream, code, status, logged
):
    # GIVEN self-continuation enabled, but Invoke fails (missing permission, throttled, ...)
    stubber, calls = invokes
    current = settings(monkeypatch, SELF_INVOKE_CONTINUATION="true")
    stubber.add_client_error("invoke", service_error_code=code, http_status_code=status)

    # WHEN the run tries to continue
    started = continue_run(request({"all": True}), CURSOR, current, context())

    # THEN it reports no continuation instead of failing the run (the reply's
    # next_cursor still lets the caller continue), and logs the error type
    assert started is False
    assert len(calls) == 1
    records = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    error = next(r for r in records if r["message"] == "Could not continue the run")
    assert error["level"] == "ERROR"
    assert error["error"] == logged
