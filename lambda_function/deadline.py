"""The Lambda deadline, as a time budget the Cloudflare calls must fit in."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

# Time kept back for the DynamoDB write and the response after the last
# Cloudflare call: a tenth of the invocation's time, within these bounds.
MIN_SAFETY_MARGIN_S = 0.5
MAX_SAFETY_MARGIN_S = 3.0


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
