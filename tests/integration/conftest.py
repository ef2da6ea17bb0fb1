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
