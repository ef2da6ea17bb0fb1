"""Read Cloudflare Workers KV from the DynamoDB mirror that kv-sync keeps.

>>> from kv_sync_reader import KVMirror
>>> mirror = KVMirror("cloudflare-kv-data", "<namespace id>")  # doctest: +SKIP
>>> mirror.get("flags/checkout")  # doctest: +SKIP
"""

from __future__ import annotations

from kv_sync_reader.errors import (
    BinaryValueError,
    KVMirrorError,
    MirrorUnavailableError,
    NotJSONError,
    RecordFormatError,
)
from kv_sync_reader.mirror import KVMirror
from kv_sync_reader.model import Entry, Freshness

__all__ = [
    "BinaryValueError",
    "Entry",
    "Freshness",
    "KVMirror",
    "KVMirrorError",
    "MirrorUnavailableError",
    "NotJSONError",
    "RecordFormatError",
]
__version__ = "0.1.0"
