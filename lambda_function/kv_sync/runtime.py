"""The container's AWS clients, and the invocation's deadline that every call must meet."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import cache
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import boto3
from botocore.config import Config

from kv_sync import tracing
from kv_sync.errors import DeadlineError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.typing import LambdaContext

P = ParamSpec("P")
T = TypeVar("T")

# Standard retry mode retries throttling and 5xx with backoff: one policy for every call.
CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS = 3, 10, 5
_BOTO_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    tcp_keepalive=True,
)
# The longest one SDK call can take before botocore gives up: every attempt timing
# out, plus standard mode's backoff between them (1 + 2 + 4 + 8 s at most).
WORST_CASE_CALL_S = MAX_ATTEMPTS * (CONNECT_TIMEOUT_S + READ_TIMEOUT_S) + 15
# Kept back before the deadline for the last writes and the reply: a tenth of the
# invocation's time, from 0.5 to 3 s; an abandoned AWS call leaves 0.25 s to reply.
MIN_SAFETY_MARGIN_S, MAX_SAFETY_MARGIN_S, REPLY_MARGIN_S = 0.5, 3.0, 0.25


@cache
def client(service: str) -> Any:
    """The container's client of an AWS service, created on first use and then reused."""
    return boto3.client(service, config=_BOTO_CONFIG)


def reset_clients() -> None:
    """Forget the clients, so that the next call builds them from the current environment."""
    client.cache_clear()


class Deadline:
    """Seconds left before the invocation must have answered (none without a context)."""

    def __init__(self, context: LambdaContext | None) -> None:
        self._context = context
        self._ends_at, self.safety_margin = float("inf"), 0.0
        if context is not None:
            remaining = max(context.get_remaining_time_in_millis(), 0) / 1000
            self._ends_at = time.monotonic() + remaining
            self.safety_margin = min(max(remaining / 10, MIN_SAFETY_MARGIN_S), MAX_SAFETY_MARGIN_S)

    def remaining(self) -> float:
        """Seconds until Lambda stops the invocation."""
        return max(self._ends_at - time.monotonic(), 0.0)

    def budget(self) -> float:
        """Seconds left for outbound calls, after the safety margin."""
        return max(self.remaining() - self.safety_margin, 0.0)

    def remaining_ms(self) -> int:
        """Milliseconds left, as Lambda reports them (0 without a context)."""
        return 0 if self._context is None else self._context.get_remaining_time_in_millis()


_current: Deadline | None = None
_guard: ThreadPoolExecutor | None = None


def activate(deadline: Deadline) -> None:
    """Make ``deadline`` the one this invocation's AWS calls must meet."""
    global _current  # noqa: PLW0603 - one invocation at a time per container
    _current = deadline


def budget() -> float:
    """Seconds the active deadline leaves for outbound calls (infinite without one)."""
    return _current.budget() if _current is not None else float("inf")


def run_within_deadline(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an AWS SDK call, giving up in time to answer before the deadline.

    botocore's timeouts and retries know nothing of the deadline: a hung or
    throttled service would keep the function running until Lambda kills it
    without a reply. When botocore's worst case could outlast the time left, the
    call runs on a guard thread and is abandoned (``DeadlineError``) shortly
    before the deadline; with more time left it runs inline, costing nothing.
    """
    wait = _current.remaining() - REPLY_MARGIN_S if _current is not None else float("inf")
    if wait > WORST_CASE_CALL_S:
        return call(*args, **kwargs)
    if wait <= 0:
        raise DeadlineError("No time left before the Lambda deadline to call AWS")
    global _guard  # noqa: PLW0603 - created on first use, reused by warm invocations
    _guard = _guard or ThreadPoolExecutor(max_workers=16, thread_name_prefix="aws-call")
    try:
        return _guard.submit(tracing.carry(call), *args, **kwargs).result(timeout=wait)
    except FutureTimeout:
        raise DeadlineError(
            "AWS did not answer before the Lambda deadline; the call was abandoned"
        ) from None
