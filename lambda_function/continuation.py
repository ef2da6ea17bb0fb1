"""Continuing a long multi-key sync in a fresh invocation of this function."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import aws_clients
from events import SCHEDULED_EVENT
from observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from config import Settings
    from events import SyncRequest


CONTINUATION_SOURCE = "kv-sync.continuation"


def continue_run(
    request: SyncRequest, next_cursor: str, settings: Settings, context: LambdaContext
) -> bool:
    """Invoke this function asynchronously with ``next_cursor``, when enabled.

    Enabled by ``SELF_INVOKE_CONTINUATION``; a run continues at most
    ``MAX_CONTINUATIONS`` times, so a sync that never finishes cannot loop forever.
    Returns whether a continuation was started.
    """
    if not settings.self_invoke_continuation:
        return False
    if request.continuation >= settings.max_continuations:
        logger.warning(
            "Not continuing: MAX_CONTINUATIONS reached",
            extra={"continuation": request.continuation, "next_cursor": next_cursor},
        )
        return False
    detail: dict[str, object] = {
        **request.selector(),
        "cursor": next_cursor,
        "continuation": request.continuation + 1,
    }
    if request.delete_missing is not None:
        detail["delete_missing"] = request.delete_missing
    # Shaped like a scheduled event: nobody waits for an asynchronous invocation's
    # reply, so retryable failures must raise for Lambda's retries and failure queue.
    payload = {"detail-type": SCHEDULED_EVENT, "source": CONTINUATION_SOURCE, "detail": detail}
    try:
        aws_clients.lambda_client().invoke(
            FunctionName=context.invoked_function_arn,
            InvocationType="Event",
            Payload=json.dumps(payload).encode("utf-8"),
        )
    except Exception as exc:  # the cursor in the reply still lets a caller continue
        logger.error("Could not continue the run", extra={"error": type(exc).__name__})
        return False
    logger.info("Continued the run", extra={"continuation": request.continuation + 1})
    return True
