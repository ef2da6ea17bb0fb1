"""Driving the function in-process: its sample events, and resetting its per-container state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


def load_event(name: str) -> dict[str, Any]:
    """A sample Lambda event from ``tests/events``."""
    data: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text())
    return data


def reset_function_state() -> None:
    """Forget the function's cached AWS clients and secret, as a new container would."""
    from kv_sync import credentials, runtime

    runtime.reset_clients()
    credentials.use_provider(None)
