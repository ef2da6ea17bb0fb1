"""The container's AWS clients and the invocation's deadline (``kv_sync.runtime``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kv_sync import errors, runtime
from kv_sync.runtime import WORST_CASE_CALL_S, Deadline, activate, run_within_deadline
from local.lambda_context import LambdaContext


def deadline(timeout_ms: int) -> Deadline:
    context: Any = LambdaContext(timeout_ms=timeout_ms)
    return Deadline(context)


# ----------------------------------------------------------------------- clients


def test_each_service_has_one_client_per_container():
    # GIVEN a warm container
    # WHEN a service's client is asked for twice
    # THEN the same client (and its connection pool) is reused; other services get theirs
    assert runtime.client("dynamodb") is runtime.client("dynamodb")
    assert runtime.client("secretsmanager") is not runtime.client("dynamodb")


def test_reset_clients_builds_new_ones(monkeypatch):
    # GIVEN a cached client
    before = runtime.client("dynamodb")

    # WHEN the cache is reset after the environment changed (a new region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    runtime.reset_clients()
    after = runtime.client("dynamodb")

    # THEN the next client is new and follows the current environment
    assert after is not before
    assert after.meta.region_name == "eu-west-1"
    runtime.reset_clients()


# ---------------------------------------------------------------------- deadline


def test_without_a_context_there_is_no_deadline():
    # GIVEN a local script, which has no Lambda context
    # WHEN its deadline is asked about
    unlimited = Deadline(None)

    # THEN there is all the time in the world, and nothing is kept back
    assert unlimited.remaining() == float("inf")
    assert unlimited.budget() == float("inf")
    assert unlimited.safety_margin == 0.0
    assert unlimited.remaining_ms() == 0


@pytest.mark.parametrize(
    ("timeout_ms", "margin"),
    [(300_000, 3.0), (60_000, 3.0), (10_000, 1.0), (3_000, 0.5), (1_000, 0.5)],
)
def test_safety_margin_is_a_tenth_of_the_time_between_half_a_second_and_3_s(timeout_ms, margin):
    # GIVEN an invocation with this much time
    # WHEN its deadline is made
    limit = deadline(timeout_ms)

    # THEN the time kept for the last writes and the reply is a tenth, bounded
    assert limit.safety_margin == pytest.approx(margin, abs=0.01)
    # AND outbound calls may use only what is left before it
    remaining = limit.remaining()
    assert limit.budget() <= remaining - limit.safety_margin


def test_budget_never_goes_negative():
    # GIVEN an invocation whose time is up
    limit = deadline(0)

    # WHEN asked what is left
    # THEN nothing is, rather than a negative time
    assert limit.remaining() == 0.0
    assert limit.budget() == 0.0


def test_remaining_ms_is_what_lambda_reports():
    # GIVEN an invocation of two minutes
    context: Any = LambdaContext(timeout_ms=120_000)
    limit = Deadline(context)

    # WHEN its remaining time is asked in milliseconds
    # THEN it is what Lambda's context reports
    assert 0 < limit.remaining_ms() <= 120_000
    assert abs(limit.remaining_ms() - context.get_remaining_time_in_millis()) < 1_000


# ------------------------------------------------------------- calls under it


def test_without_a_deadline_calls_run_inline():
    # GIVEN no deadline (a local script)
    activate(Deadline(None))

    # WHEN an AWS call is made
    # THEN it runs on the caller's thread
    assert run_within_deadline(threading.current_thread) is threading.current_thread()


def test_with_more_time_than_botocore_can_take_calls_run_inline():
    # GIVEN more time left than botocore's timeouts and retries can use up
    activate(deadline(int((WORST_CASE_CALL_S + 5) * 1000)))

    # WHEN an AWS call is made
    # THEN it runs on the invocation's own thread (no hand-off cost)
    assert run_within_deadline(threading.current_thread) is threading.current_thread()


def test_near_the_deadline_calls_run_on_a_guarded_thread():
    # GIVEN 5 s left, less than botocore's worst case
    activate(deadline(5_000))

    # WHEN an AWS call is made
    # THEN it runs on a guard thread, so it can be abandoned
    assert run_within_deadline(threading.current_thread) is not threading.current_thread()


def test_a_call_that_finishes_in_time_returns_its_result():
    # GIVEN a guarded call
    activate(deadline(5_000))

    # WHEN it finishes in time
    # THEN its result is returned
    assert run_within_deadline(lambda a, b: a + b, 2, b=3) == 5


def test_exceptions_of_the_call_propagate_unchanged():
    # GIVEN a guarded call that fails
    activate(deadline(5_000))

    def fail() -> None:
        raise KeyError("boom")

    # WHEN it is made
    # THEN its own exception reaches the caller
    with pytest.raises(KeyError):
        run_within_deadline(fail)


def test_a_call_that_outlives_the_deadline_is_abandoned():
    # GIVEN an invocation with 0.6 s left and an AWS call that hangs until released
    activate(deadline(600))
    release = threading.Event()
    finished: list[Any] = []

    def hang() -> None:
        release.wait(10)
        finished.append(True)

    # WHEN it runs under the guard
    try:
        with pytest.raises(errors.DeadlineError) as raised:
            run_within_deadline(hang)
        # THEN the invocation got control back while the call was still hanging,
        # as a retryable TIMEOUT
        assert finished == []
    finally:
        release.set()
    assert raised.value.type == "TIMEOUT"
    assert raised.value.is_retryable is True


def test_no_call_starts_when_no_time_is_left():
    # GIVEN less time left than the reply needs
    activate(deadline(100))
    called: list[int] = []

    # WHEN an AWS call is asked for
    with pytest.raises(errors.DeadlineError):
        run_within_deadline(lambda: called.append(1))

    # THEN it is not started; the caller gets TIMEOUT
    assert called == []
