"""The one stand-in for Lambda's context object: tests, benchmarks and local tools use it.

Standard library only, so that a benchmark's fresh interpreter can import it
before the code under test without paying for anything else.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

FUNCTION_NAME = "cloudflare-data-sync"
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as ``context``, counting down like Lambda's.

    Parameters
    ----------
    timeout_ms
        The invocation's time limit; ``get_remaining_time_in_millis`` counts down
        from it in real time (on ``clock``), so deadline logic runs as deployed.
    """

    timeout_ms: int = 300_000
    function_name: str = FUNCTION_NAME
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = FUNCTION_ARN
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "2026/01/01/[$LATEST]local"
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _ends_at: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ends_at = self.clock() + self.timeout_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before this invocation's timeout (never negative)."""
        return max(int((self._ends_at - self.clock()) * 1000), 0)
