"""The Lambda deadline, as a time budget the Cloudflare calls must fit in."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from aws_clients import WORST_CASE_CALL_S
from errors import DeadlineError

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.typing import LambdaContext

P = ParamSpec("P")
T = TypeVar("T")

# Time kept back for the DynamoDB write and the response after the last
# Cloudflare call: a tenth of the invocation's time, within these bounds.
MIN_SAFETY_MARGIN_S = 0.5
MAX_SAFETY_MARGIN_S = 3.0
# Time an AWS call leaves for shaping and returning the reply after it gives up.
REPLY_MARGIN_S = 0.25


class Deadline:
    """Seconds left before the invocation must have answered.

    Parameters
    ----------
    context
        The Lambda context; ``None`` (local scripts) means no deadline.
    """

    def __init__(self, context: LambdaContext | None) -> None:
        self._context = context
        self._ends_at: float | None = None
        if context is not None:
            remaining = max(context.get_remaining_time_in_millis(), 0) / 1000
            self._ends_at = time.monotonic() + remaining
            self.safety_margin = min(max(remaining / 10, MIN_SAFETY_MARGIN_S), MAX_SAFETY_MARGIN_S)
        else:
            self.safety_margin = 0.0

    def remaining(self) -> float:
        """Seconds until the Lambda is stopped (infinite without a context)."""
        if self._ends_at is None:
            return float("inf")
        return max(self._ends_at - time.monotonic(), 0.0)

    def budget(self) -> float:
        """Seconds left for outbound calls, after the safety margin."""
        return max(self.remaining() - self.safety_margin, 0.0)

    def remaining_ms(self) -> int:
        """Milliseconds left, as Lambda reports them (0 without a context)."""
        if self._context is None:
            return 0
        return int(self._context.get_remaining_time_in_millis())


_current: Deadline | None = None
_executor: ThreadPoolExecutor | None = None


def activate(deadline: Deadline) -> None:
    """Make ``deadline`` the one AWS calls of this invocation must respect."""
    global _current  # noqa: PLW0603 - one invocation at a time per container
    _current = deadline


def run_within_deadline(call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an AWS SDK call, giving up in time to answer before the deadline.

    botocore's own timeouts and retries (seconds each) know nothing of the
    Lambda deadline; a hung or throttled service would otherwise keep the
    function running until Lambda kills it without a reply. When botocore's worst
    case could outlast the time left, the call runs on a worker thread; if it has
    not returned when the deadline (less the time to reply) comes,
    ``DeadlineError`` is raised and the call is abandoned. With more time left
    than that, it runs inline.
    """
    deadline = _current
    wait = deadline.remaining() - REPLY_MARGIN_S if deadline is not None else float("inf")
    if wait > WORST_CASE_CALL_S:
        # botocore gives up in time on its own: no worker thread on the warm path.
        return call(*args, **kwargs)
    if wait <= 0:
        raise DeadlineError("No time left before the Lambda deadline to call AWS")
    global _executor  # noqa: PLW0603 - created on first use, reused by warm invocations
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=16, thread_name_prefix="aws-call")
    future = _executor.submit(call, *args, **kwargs)
    try:
        return future.result(timeout=wait)
    except FutureTimeout:
        raise DeadlineError(
            "AWS did not answer before the Lambda deadline; the call was abandoned"
        ) from None
