"""Driving the function in-process: its sample events, and resetting its per-container state."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


def load_event(name: str) -> dict[str, Any]:
    """A sample Lambda event from ``tests/events``."""
    data: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text())
    return data


def url_post(body: dict[str, Any] | str, *, base64_encoded: bool = False) -> dict[str, Any]:
    """The sample Function URL event as a POST carrying ``body`` (JSON-encoded if a dict)."""
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    text = body if isinstance(body, str) else json.dumps(body)
    if base64_encoded:
        text = base64.b64encode(text.encode("utf-8")).decode("ascii")
    event["requestContext"]["http"]["method"] = "POST"
    event["body"] = text
    event["isBase64Encoded"] = base64_encoded
    return event


def url_get(query: dict[str, str]) -> dict[str, Any]:
    """The sample Function URL GET event with its query replaced."""
    event = load_event("lambdaFunctionUrlIAMEventGet.json")
    event["queryStringParameters"] = query
    event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    return event


def scheduled(detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sample scheduled event, its rule's constant input in ``detail``."""
    event = load_event("scheduledEvent.json")
    if detail is not None:
        event["detail"] = detail
    return event


def reset_function_state() -> None:
    """Forget the function's cached AWS clients and secret, as a new container would."""
    from kv_sync import credentials, runtime

    runtime.reset_clients()
    credentials.use_provider(None)
