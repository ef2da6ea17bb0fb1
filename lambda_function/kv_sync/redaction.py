"""Keeping secret values out of everything the function emits.

Every secret value the function loads is registered here. ``redact`` replaces
them in text on its way out: error messages (``errors``) and log lines (the
formatter in ``observability``). Messages are written never to include secrets,
but text from elsewhere (an upstream error page quoting the request, a library
exception quoting headers) can.
"""

from __future__ import annotations

import threading

REPLACEMENT = "[REDACTED]"
# Shorter strings would redact ordinary words; real tokens are far longer.
MIN_SECRET_LENGTH = 8

_secrets: tuple[str, ...] = ()
_lock = threading.Lock()


def register(*values: str) -> None:
    """Remember secret values so that ``redact`` removes them from now on."""
    global _secrets  # noqa: PLW0603 - the container's registry of loaded secrets
    with _lock:
        known = set(_secrets) | {v for v in values if len(v) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret containing another is replaced whole.
        _secrets = tuple(sorted(known, key=len, reverse=True))


def redact(text: str) -> str:
    """``text`` with every registered secret value replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REPLACEMENT)
    return text
