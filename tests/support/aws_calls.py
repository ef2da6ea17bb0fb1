"""Which AWS API calls the function made: botocore's own event hooks on its clients."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def recorded_calls(service: str) -> Iterator[list[str]]:
    """The operations (``UpdateItem``...) the function's ``service`` client calls inside.

    One entry per API call, whatever botocore retries underneath. The hook sits on
    the client ``kv_sync.runtime.client`` hands the function, so set the environment
    (and reset the function's state) before entering.
    """
    from kv_sync import runtime

    calls: list[str] = []

    def record(**kwargs: Any) -> None:
        calls.append(kwargs["model"].name)

    events = runtime.client(service).meta.events
    event_name = f"before-call.{service}"
    events.register(event_name, record, unique_id="tests-recorded-calls")
    try:
        yield calls
    finally:
        events.unregister(event_name, unique_id="tests-recorded-calls")
