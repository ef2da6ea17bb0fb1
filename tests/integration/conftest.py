"""Integration fixtures: the real handler against moto server and the KV emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.stack import Stack, deployed


@pytest.fixture
def stack(
    moto_server_url: str, kv_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    """A fresh table and secret in moto server, a namespace in the emulator."""
    with deployed(moto_server_url, kv_emulator, monkeypatch) as built:
        yield built


@pytest.fixture
def lambda_stub(stack: Stack) -> Iterator[list[dict[str, Any]]]:
    """The function's Lambda client, stubbed: each ``Invoke`` it makes is recorded."""
    from botocore.stub import ANY, Stubber

    from kv_sync import runtime

    client = runtime.client("lambda")
    invoked: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        invoked.append(dict(params))

    client.meta.events.register("before-parameter-build.lambda.Invoke", record)
    with Stubber(client) as stubber:
        for _ in range(5):
            stubber.add_response(
                "invoke",
                {"StatusCode": 202},
                {"FunctionName": ANY, "InvocationType": "Event", "Payload": ANY},
            )
        yield invoked
    client.meta.events.unregister("before-parameter-build.lambda.Invoke", record)
