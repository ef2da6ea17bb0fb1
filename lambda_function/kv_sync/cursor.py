"""Where a multi-key run stands, as the opaque ``next_cursor`` a caller passes back."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kv_sync.errors import ValidationError

if TYPE_CHECKING:
    from kv_sync.model import SyncRequest


@dataclass(frozen=True)
class Position:
    """Cloudflare's listing cursor and the last key listed, or the offset into named keys."""

    cf_cursor: str | None = None
    after: str | None = None
    offset: int = 0


START = Position()


def encode(position: Position, request: SyncRequest) -> str:
    """The cursor of ``position`` in ``request``'s run."""
    payload = {"v": 1, "s": _fingerprint(request), "c": position.cf_cursor, "a": position.after}
    if position.offset:
        payload["o"] = position.offset
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode(request: SyncRequest) -> Position:
    """Where ``request.cursor`` says the run stands (``START`` without one).

    Raises
    ------
    ValidationError
        The cursor is not one this function issued, or belongs to another selector.
    """
    if not request.cursor:
        return START
    try:
        payload = json.loads(
            base64.urlsafe_b64decode(request.cursor + "=" * (-len(request.cursor) % 4))
        )
        offset = payload.get("o", 0)
        fields = (payload["c"], payload["a"])
        if payload["v"] != 1 or type(offset) is not int or offset < 0:
            raise ValueError("unknown cursor version or a bad offset")
        if not all(field is None or isinstance(field, str) for field in fields):
            raise TypeError("cursor fields must be strings")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise ValidationError("cursor is not a next_cursor this function issued") from None
    if payload.get("s") != _fingerprint(request):
        raise ValidationError("cursor belongs to a different key_names, prefix or all selector")
    return Position(*fields, offset)


def _fingerprint(request: SyncRequest) -> str:
    """Ties a cursor to the selector it was issued for."""
    canonical = json.dumps(request.selector(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
