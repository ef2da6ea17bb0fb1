"""Reading what the local runner (``python -m local.runner``) printed."""

from __future__ import annotations

import json
from typing import Any


def documents(text: str) -> list[dict[str, Any]]:
    """The JSON documents printed one after another on stdout (nothing else may be there)."""
    decoder, found, index = json.JSONDecoder(), [], 0
    while text[index:].strip():
        index += len(text[index:]) - len(text[index:].lstrip())
        document, index = decoder.raw_decode(text, index)
        found.append(document)
    return found
