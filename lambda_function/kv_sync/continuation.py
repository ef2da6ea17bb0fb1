"""Continuing a long multi-key sync in a fresh, asynchronous invocation of this function."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from kv_sync import runtime
from kv_sync.events import SCHEDULED_EVENT
from kv_sync.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from kv_sync.model import SyncRequest
    from kv_sync.settings import Settings

CONTINUATION_SOURCE = "kv-sync.continuation"


def continue_run(
    request: SyncRequest, next_cursor: str, settings: Settings, context: LambdaContext
) -> bool:
    """Invoke this function asynchronously with ``next_cursor``; whether it was started.

    Only with ``SELF_INVOKE_CONTINUATION``, and at most ``MAX_CONTINUATIONS``
    times per run, so that a sync that never finishes cannot loop forever.
    """
    if not settings.self_invoke_continuation:
        return False
    if request.continuation >= settings.max_continuations:
        logger.warning(
            "Not continuing: MAX_CONTINUATIONS reached", extra={"next_cursor": next_cursor}
        )
        return False
    detail = {**request.selector(), "cursor": next_cursor, "continuation": request.continuation + 1}
    if request.delete_missing is not None:
        detail["delete_missing"] = request.delete_missing
    # The rest of the run is the same run: a dry run stays one (its cursor is tied to
    # it), and a forced one keeps the override its deletions need at the end.
    for flag in ("dry_run", "force_delete"):
        if getattr(request, flag):
            detail[flag] = True
    # Shaped like a scheduled event: nobody waits for an asynchronous invocation's
    # reply, so retryable failures must raise for Lambda's retries and failure queue.
    payload = {"detail-type": SCHEDULED_EVENT, "source": CONTINUATION_SOURCE, "detail": detail}
    try:
        runtime.client("lambda").invoke(
            FunctionName=context.invoked_function_arn,
            InvocationType="Event",
            Payload=json.dumps(payload).encode("utf-8"),
        )
    except Exception as exc:  # the cursor in the reply still lets a caller continue
        logger.error("Could not continue the run", extra={"error": type(exc).__name__})
        return False
    logger.info("Continued the run", extra={"continuation": request.continuation + 1})
    return True
