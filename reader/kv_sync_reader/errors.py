"""The errors a ``KVMirror`` raises; each is a ``KVMirrorError``."""

from __future__ import annotations


class KVMirrorError(Exception):
    """Base class of every error of ``kv_sync_reader``."""


class BinaryValueError(KVMirrorError, TypeError):
    """A text read (``get``, ``get_json``) of a value that is binary.

    Read such a value with ``KVMirror.get_bytes`` (or ``get_entry``).
    """


class NotJSONError(KVMirrorError, ValueError):
    """``get_json`` of a text value that is not JSON."""


class RecordFormatError(KVMirrorError, ValueError):
    """An item of the table that is not a record this reader knows how to decode."""


class MirrorUnavailableError(KVMirrorError):
    """DynamoDB could not be read, and no cached value was recent enough to serve.

    The DynamoDB (botocore) error is the ``__cause__``.
    """
