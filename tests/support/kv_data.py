"""Putting test keys into the KV emulator's namespace of a stack."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.stack import Stack


def seed(stack: Stack, count: int, prefix: str = "flags/") -> dict[str, bytes]:
    """``count`` keys of mixed kinds: text, JSON, binary (every 7th), some with metadata.

    Keys are ``<prefix>000``, ``<prefix>001`` ...; returns the values by key.
    """
    values: dict[str, bytes] = {}
    for i in range(count):
        key = f"{prefix}{i:03d}"
        if i % 7 == 3:
            value = bytes([0xFF, 0xFE, i % 256])  # binary: bulk get cannot return it
        elif i % 2:
            value = json.dumps({"n": i, "on": bool(i % 3)}).encode()
        else:
            value = f"text value {i}".encode()
        metadata = {"owner": "team", "rev": i} if i % 5 == 0 else None
        stack.emulator.put(stack.namespace_id, key, value, metadata=metadata)
        values[key] = value
    return values
