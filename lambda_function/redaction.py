"""Keeping secret values out of everything the function emits.

Every secret value the function loads is registered here; ``redact`` replaces
them in any text on its way to a log line, a reply or a trace. Error messages
are written never to include secrets, but text from elsewhere (an upstream
error page quoting the request, a library exception quoting headers) can.
"""

from __future__ import annotations

import threading

REPLACEMENT = "[REDACTED]"
# Shorter strings would redact ordinary words; real tokens are far longer.
MIN_SECRET_LENGTH = 8

_secrets: set[str] = set()
_lock = threading.Lock()


def register(*values: str) -> None:
    """Remember secret values so that ``redact`` removes them from now on."""
    with _lock:
        _secrets.update(v for v in values if len(v) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced."""
    if not _secrets:
        return text
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REPLACEMENT)
    return text
