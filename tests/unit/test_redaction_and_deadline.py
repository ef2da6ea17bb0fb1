"""Secret redaction and the deadline guard around AWS calls."""

from __future__ import annotations

import threading
import time

import pytest

import aws_clients
import deadline
import errors
import redaction
from tests.unit.conftest import FakeContext


def limit(remaining_ms: int) -> deadline.Deadline:
    return deadline.Deadline(FakeContext(remaining_ms=remaining_ms))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.setattr(redaction, "_secrets", set())
    monkeypatch.setattr(deadline, "_current", None)


def test_registered_secrets_are_replaced_everywhere_in_a_text():
    # GIVEN a token and the secret string it came from
    redaction.register("tok-1234567890", '{"api_token": "tok-1234567890"}')

    # WHEN text quoting them is redacted
    text = redaction.redact("Authorization: Bearer tok-1234567890; body tok-1234567890")

    # THEN no occurrence is left
    assert "tok-1234567890" not in text
    assert text.count(redaction.REPLACEMENT) == 2


def test_short_values_are_not_treated_as_secrets():
    # GIVEN a value too short to be a real token (it would blank ordinary words)
    redaction.register("on")

    # THEN text keeps it
    assert redaction.redact("turned on") == "turned on"


def test_longest_secret_is_replaced_first():
    redaction.register("abcdefgh", "abcdefgh-and-more")

    assert redaction.redact("x abcdefgh-and-more y") == f"x {redaction.REPLACEMENT} y"


def test_without_a_deadline_calls_run_inline():
    assert deadline.run_within_deadline(threading.current_thread) is threading.current_thread()


def test_a_call_that_outlives_the_deadline_is_abandoned_in_time():
    # GIVEN an invocation with 0.6 s left and an AWS call that hangs for 3 s
    deadline.activate(limit(600))
    release = threading.Event()

    # WHEN it runs under the guard
    started = time.monotonic()
    with pytest.raises(errors.DeadlineError) as raised:
        deadline.run_within_deadline(release.wait, 3)
    elapsed = time.monotonic() - started
    release.set()

    # THEN it gave up leaving the reply margin, as a retryable TIMEOUT
    assert elapsed < 0.6 - deadline.REPLY_MARGIN_S + 0.1
    assert raised.value.type == "TIMEOUT"
    assert raised.value.is_retryable is True


def test_with_more_time_than_botocore_can_take_calls_run_inline():
    # GIVEN more time left than botocore's timeouts and retries can use up
    deadline.activate(limit(int((aws_clients.WORST_CASE_CALL_S + 5) * 1000)))

    # THEN the call runs on the invocation's own thread (no hand-off cost)
    assert deadline.run_within_deadline(threading.current_thread) is threading.current_thread()


def test_near_the_deadline_calls_run_on_a_guarded_thread():
    deadline.activate(limit(5_000))

    assert deadline.run_within_deadline(threading.current_thread) is not threading.current_thread()


def test_a_call_that_finishes_in_time_returns_its_result():
    deadline.activate(limit(5_000))

    assert deadline.run_within_deadline(lambda a, b: a + b, 2, b=3) == 5


def test_exceptions_of_the_call_propagate_unchanged():
    deadline.activate(limit(5_000))

    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        deadline.run_within_deadline(fail)


def test_no_call_starts_when_no_time_is_left():
    deadline.activate(limit(100))
    called = []

    with pytest.raises(errors.DeadlineError):
        deadline.run_within_deadline(lambda: called.append(1))

    assert called == []
