"""What a ``KVMirror`` returns: a key's ``Entry`` and a selector's ``Freshness``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime


@dataclass(frozen=True, slots=True)
class Entry:
    """One KV key as the mirror holds it.

    Attributes
    ----------
    key
        The KV key name.
    value
        The value's exact bytes, as KV holds them (compression undone).
    value_type
        ``"json"`` (UTF-8 text that parses as JSON), ``"string"`` (other UTF-8
        text) or ``"binary"`` (bytes that are not UTF-8).
    metadata
        The KV metadata as plain Python (numbers as ``int`` or ``float``), or
        ``None`` when the key has none.
    expiration
        The KV expiration, epoch seconds, or ``None``.
    updated_at
        When a sync last stored a change of the value, metadata or expiration
        (the moment it read them from Cloudflare), UTC.
    """

    key: str
    value: bytes
    value_type: str
    metadata: Any
    expiration: int | None
    updated_at: datetime | None

    @property
    def is_text(self) -> bool:
        """Whether the value is UTF-8 text (``value_type`` ``string`` or ``json``)."""
        return self.value_type != "binary"

    def expired(self, now: float) -> bool:
        """Whether the KV expiration has passed at ``now`` (epoch seconds)."""
        return self.expiration is not None and self.expiration <= now


@dataclass(frozen=True, slots=True)
class Freshness:
    """How fresh the mirror is for one selector (all keys, or a prefix).

    Read from the selector's sync-state item. The counts are those of the last
    complete run, ``None`` when no run has completed yet.

    Attributes
    ----------
    selector
        The selector the state is about, e.g. ``{"all": True}``.
    last_complete_started_at, last_complete_finished_at
        Start and finish of the last complete run (UTC), ``None`` if none completed.
    age_seconds
        Seconds from the last complete run's finish to now, ``None`` if none completed.
    listed, written, unchanged, deleted, failed
        The last complete run's counts.
    last_run_complete
        Whether the most recent run (complete, stopped or failed) completed.
    last_run_started_at, last_run_finished_at
        Start and finish of the most recent run (UTC).
    last_run_error_type
        The error type of the most recent run when it failed, else ``None``.
    updated_at
        When the item was last written (UTC).
    """

    selector: Any
    last_complete_started_at: datetime | None
    last_complete_finished_at: datetime | None
    age_seconds: float | None
    listed: int | None
    written: int | None
    unchanged: int | None
    deleted: int | None
    failed: int | None
    last_run_complete: bool
    last_run_started_at: datetime | None
    last_run_finished_at: datetime | None
    last_run_error_type: str | None
    updated_at: datetime | None

    @property
    def ever_complete(self) -> bool:
        """Whether a run of this selector has ever completed."""
        return self.last_complete_finished_at is not None
