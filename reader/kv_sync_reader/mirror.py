"""``KVMirror``: read Cloudflare Workers KV keys from the DynamoDB table kv-sync keeps."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from kv_sync_reader import decode
from kv_sync_reader.cache import SWRCache
from kv_sync_reader.errors import BinaryValueError, MirrorUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from kv_sync_reader.model import Entry, Freshness

KEY_PREFIX = "KEY#"
SYNC_ALL = "#SYNC#all"
SYNC_PREFIX = "#SYNC#prefix#"
logger = logging.getLogger("kv_sync_reader")


@dataclass(frozen=True, slots=True)
class _Cached:
    entry: Entry
    text: str | None  # decoded once; None for a binary value


class KVMirror:
    """The keys of one KV namespace, read from kv-sync's DynamoDB table.

    Values come back exactly as KV holds them (gzip and Binary undone); a record
    whose KV ``expiration`` has passed reads as absent, whether or not DynamoDB's
    TTL has deleted it yet. Reads go through an in-process cache (see
    ``cache_ttl`` and ``max_stale``).

    Parameters
    ----------
    table_name
        The table (Terraform's ``dynamodb_table_name``).
    namespace_id
        The KV namespace's ID.
    cache_ttl
        Seconds a read value (or absence) is served from memory. Past it, one
        caller re-reads the key while the others keep the cached value.
    max_stale
        Seconds past ``cache_ttl`` that a cached value is still served while
        DynamoDB fails; past that, ``MirrorUnavailableError`` is raised.
    client
        A boto3 DynamoDB client; ``None`` makes ``boto3.client("dynamodb")``.
        The caller that refreshes a key waits for its ``GetItem``: give the
        client short timeouts (``botocore.config.Config(connect_timeout=...,
        read_timeout=..., retries=...)``) to bound that wait when DynamoDB is slow.
    consistent_read
        Strongly consistent ``GetItem`` and ``Query`` (twice the read units).
    clock
        Monotonic seconds, for the cache.
    wall_clock
        Epoch seconds, for KV expirations and ``Freshness.age_seconds``.

    Examples
    --------
    >>> mirror = KVMirror("cloudflare-kv-data", "<namespace id>")  # doctest: +SKIP
    >>> mirror.get_json("flags/checkout")  # doctest: +SKIP
    {'enabled': True, 'percentage': 25}
    """

    def __init__(  # noqa: PLR0917 - the documented signature: positional like the issue's
        self,
        table_name: str,
        namespace_id: str,
        cache_ttl: float = 30.0,
        max_stale: float = 300.0,
        client: Any = None,
        consistent_read: bool = False,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not table_name or not namespace_id:
            raise ValueError("table_name and namespace_id must not be empty")
        if cache_ttl < 0 or max_stale < 0:
            raise ValueError("cache_ttl and max_stale must be >= 0")
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.table_name = table_name
        self.namespace_id = namespace_id
        self.consistent_read = consistent_read
        self._client = client
        self._pk = f"NAMESPACE#{namespace_id}"
        self._wall_clock = wall_clock
        self._cache: SWRCache[_Cached | None] = SWRCache(
            cache_ttl, max_stale, clock, transient=(MirrorUnavailableError,)
        )

    def __repr__(self) -> str:
        return (
            f"KVMirror({self.table_name!r}, {self.namespace_id!r}, cache_ttl={self._cache.ttl}, "
            f"max_stale={self._cache.max_stale}, consistent_read={self.consistent_read})"
        )

    def get(self, key: str) -> str | None:
        """The text value of ``key``; ``None`` when absent or expired.

        Raises
        ------
        BinaryValueError
            The value is binary (not UTF-8): read it with ``get_bytes``.
        MirrorUnavailableError
            DynamoDB failed and no cached value may be served.
        """
        return self._text(key)

    def get_json(self, key: str) -> Any | None:
        """The value of ``key`` parsed as JSON; ``None`` when absent or expired.

        Each call parses anew, so the caller may change what it gets.

        Raises
        ------
        NotJSONError
            The value is text that is not JSON.
        BinaryValueError
            The value is binary: read it with ``get_bytes``.
        MirrorUnavailableError
            DynamoDB failed and no cached value may be served.
        """
        text = self._text(key)
        return None if text is None else decode.parse_json(key, text)

    def get_bytes(self, key: str) -> bytes | None:
        """The exact bytes of ``key``'s value, whatever its type; ``None`` when absent or expired.

        Raises
        ------
        MirrorUnavailableError
            DynamoDB failed and no cached value may be served.
        """
        cached = self._read(key)
        return None if cached is None else cached.entry.value

    def get_entry(self, key: str) -> Entry | None:
        """``key``'s value bytes, type, metadata, expiration and ``updated_at``.

        ``None`` when absent or expired.

        Raises
        ------
        MirrorUnavailableError
            DynamoDB failed and no cached value may be served.
        """
        cached = self._read(key)
        return None if cached is None else cached.entry

    def _text(self, key: str) -> str | None:
        """``key``'s text value (``None``: absent or expired); a binary value raises."""
        cached = self._read(key)
        if cached is None:
            return None
        if cached.text is None:
            raise _binary(cached.entry)
        return cached.text

    def keys(self, prefix: str = "") -> Iterator[str]:
        """The names of the keys starting with ``prefix``, in KV's order (UTF-8 bytes).

        Read from the table on each call (a paginated ``Query``; never cached),
        lazily as the iterator is consumed; keys whose expiration has passed
        are skipped.

        Raises
        ------
        MirrorUnavailableError
            DynamoDB failed.
        """
        pages = self._client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(#sk, :sk)",
            ExpressionAttributeNames={"#sk": "sk", "#exp": "expiration"},
            ExpressionAttributeValues={":pk": {"S": self._pk}, ":sk": {"S": KEY_PREFIX + prefix}},
            ProjectionExpression="#sk, #exp",
            ConsistentRead=self.consistent_read,
        )
        now = self._wall_clock()
        try:
            for page in pages:
                for item in page.get("Items", []):
                    expiration = item.get("expiration", {}).get("N")
                    if expiration is None or Decimal(expiration) > now:
                        yield item["sk"]["S"][len(KEY_PREFIX) :]
        except (BotoCoreError, ClientError) as error:
            raise MirrorUnavailableError(
                f"Could not list keys {prefix!r}* of table {self.table_name}: {error}"
            ) from error

    def freshness(self, prefix: str | None = None) -> Freshness | None:
        """The sync state of all keys (or of the runs of ``prefix``): last complete run
        and its counts, last run; ``None`` when no multi-key run has recorded any.

        Read from the table on each call, never cached.

        Raises
        ------
        MirrorUnavailableError
            DynamoDB failed.
        """
        sort_key = SYNC_ALL if prefix is None else SYNC_PREFIX + prefix
        item = self._get_item(sort_key, "the sync state")
        return None if item is None else decode.freshness(item, self._wall_clock())

    def clear_cache(self) -> None:
        """Forget every cached value: the next read of each key goes to DynamoDB."""
        self._cache.clear()

    def _read(self, key: str) -> _Cached | None:
        cached = self._cache.get(key, self._load)
        if cached is None:
            return None
        expiration = cached.entry.expiration
        if expiration is not None and expiration <= self._wall_clock():
            return None
        return cached

    def _load(self, key: str) -> _Cached | None:
        item = self._get_item(KEY_PREFIX + key, repr(key))
        return None if item is None else _Cached(*decode.entry(item))

    def _get_item(self, sort_key: str, what: str) -> dict[str, Any] | None:
        try:
            response = self._client.get_item(
                TableName=self.table_name,
                Key={"pk": {"S": self._pk}, "sk": {"S": sort_key}},
                ConsistentRead=self.consistent_read,
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning(
                "Reading %s from DynamoDB table %s failed: %s", what, self.table_name, error
            )
            raise MirrorUnavailableError(
                f"Could not read {what} from DynamoDB table {self.table_name}: {error}"
            ) from error
        item: dict[str, Any] | None = response.get("Item")
        return item


def _binary(entry: Entry) -> BinaryValueError:
    return BinaryValueError(
        f"The value of {entry.key!r} is binary ({len(entry.value):,} bytes, not UTF-8 text); "
        "read it with get_bytes() or get_entry()"
    )
