"""The fake Cloudflare account the unit tests sync from, and readers of what reached DynamoDB.

Constants name the account, namespace, token, table and secret the ``aws`` and
``cf`` fixtures of ``tests/unit/conftest.py`` set up. The reply builders return
Cloudflare's JSON envelopes; ``FakeNamespace`` serves a whole namespace (bulk
get, list keys, raw values, metadata) through a ``responses`` mock, the way the
real API does, so that tests can drive every selector through the handler.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from boto3.dynamodb.types import TypeDeserializer

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import responses
    from requests import PreparedRequest

CF_BASE = "https://cf.test/client/v4"
ACCOUNT_ID = "acc0123456789abcdef0123456789abcd"
NAMESPACE_ID = "ns0123456789abcdef0123456789abcd"
NAMESPACE_NAME = "flags"
NAMESPACE_URL = f"{CF_BASE}/accounts/{ACCOUNT_ID}/storage/kv/namespaces/{NAMESPACE_ID}"
BULK_GET_URL = f"{NAMESPACE_URL}/bulk/get"
KEYS_URL = f"{NAMESPACE_URL}/keys"
TABLE = "cloudflare-kv-data"
SECRET = "cloudflare-kv-credentials"
TOKEN = "cf-token-Zq8v3XkS9aTq"
SECRET_VALUE = {
    "api_token": TOKEN,
    "account_id": ACCOUNT_ID,
    "kv_namespace_id": NAMESPACE_ID,
    "kv_namespace": NAMESPACE_NAME,
}
PK = f"NAMESPACE#{NAMESPACE_ID}"
# Cloudflare's error code for "key not found" (a 404 that is not an unknown namespace).
KEY_NOT_FOUND = 10009
NOT_TEXT = 10025

Response = tuple[int, dict[str, str], str | bytes]


def envelope(result: Any, result_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """A successful Cloudflare API envelope around ``result``."""
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return body


def bulk_entry(value: str, metadata: Any = None, expiration: int | None = None) -> dict[str, Any]:
    """One key of a bulk-get reply ``withMetadata``."""
    entry: dict[str, Any] = {"value": value, "metadata": metadata}
    if expiration is not None:
        entry["expiration"] = expiration
    return entry


def bulk_get_reply(
    key: str, value: str | None, metadata: Any = None, expiration: int | None = None
) -> dict[str, Any]:
    """A bulk-get envelope for one key (``value`` ``None``: the key does not exist)."""
    entry = None if value is None else bulk_entry(value, metadata, expiration)
    return envelope({"values": {key: entry}})


def bulk_values_reply(values: Mapping[str, dict[str, Any] | None]) -> dict[str, Any]:
    """A bulk-get envelope for several keys, each a ``bulk_entry`` or ``None``."""
    return envelope({"values": dict(values)})


def list_keys_reply(names: list[str], cursor: str = "") -> dict[str, Any]:
    """A list-keys envelope; an empty ``cursor`` marks the last page."""
    result = [{"name": name} for name in names]
    return envelope(result, {"count": len(result), "cursor": cursor})


def failure(code: int, message: str) -> dict[str, Any]:
    """A failed Cloudflare API envelope."""
    return {
        "success": False,
        "errors": [{"code": code, "message": message}],
        "messages": [],
        "result": None,
    }


def stored_item(dynamodb: Any, key: str) -> dict[str, Any] | None:
    """The DynamoDB record of ``key`` as Python values, or ``None``."""
    item = dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": PK}, "sk": {"S": f"KEY#{key}"}}, ConsistentRead=True
    ).get("Item")
    return None if item is None else _plain(item)


def stored_items(dynamodb: Any) -> dict[str, dict[str, Any]]:
    """Every record of the test namespace, by KV key name (not the runs' bookkeeping
    items, whose sort keys start with ``#``)."""
    items: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {
        "TableName": TABLE,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :records)",
        "ExpressionAttributeValues": {":pk": {"S": PK}, ":records": {"S": "KEY#"}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.query(**kwargs)
        for item in page["Items"]:
            plain = _plain(item)
            items[plain["key"]] = plain
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


@dataclass
class KVValue:
    """One key of a ``FakeNamespace``."""

    value: bytes
    metadata: Any = None
    expiration: int | None = None


class FakeNamespace:
    """The test namespace as Cloudflare serves it, answering through a ``responses`` mock.

    Bulk get answers 400 (code 10025) for a batch holding a value that is not
    UTF-8, as Cloudflare does; such values are read with ``GET .../values/{key}``
    and ``GET .../metadata/{key}``. Listings are sorted by UTF-8 bytes, at most
    ``limit`` names a page, with a cursor to the next page.
    """

    def __init__(self) -> None:
        self.entries: dict[str, KVValue] = {}
        self.served = {"bulk_get": 0, "list": 0}
        # Called before each listing page is served (say, to move a fake clock).
        self.before_list: list[Callable[[], None]] = []
        self._failing: dict[str, tuple[int, int]] = {}

    def fail_after(self, route: str, calls: int, status: int = 500) -> None:
        """Answer ``route`` (``"bulk_get"`` or ``"list"``) with ``status`` once it has
        served ``calls`` more requests; ``recover`` ends that."""
        self._failing[route] = (self.served[route] + calls, status)

    def recover(self) -> None:
        """Serve every request again."""
        self._failing.clear()

    def put(
        self, key: str, value: str | bytes, metadata: Any = None, expiration: int | None = None
    ) -> None:
        """Store (or overwrite) a key."""
        raw = value.encode("utf-8") if isinstance(value, str) else value
        self.entries[key] = KVValue(raw, metadata, expiration)

    def delete(self, key: str) -> None:
        """Remove a key."""
        del self.entries[key]

    def install(self, mock: responses.RequestsMock) -> None:
        """Serve this namespace's routes from ``mock``."""
        import responses

        base = re.escape(NAMESPACE_URL)
        mock.add_callback(responses.POST, BULK_GET_URL, callback=self._bulk_get)
        mock.add_callback(responses.GET, re.compile(rf"{base}/keys(\?.*)?$"), self._list)
        mock.add_callback(responses.GET, re.compile(rf"{base}/values/[^/?]+$"), self._value)
        mock.add_callback(responses.GET, re.compile(rf"{base}/metadata/[^/?]+$"), self._metadata)

    def _fault(self, route: str) -> Response | None:
        failing = self._failing.get(route)
        if failing is not None and self.served[route] >= failing[0]:
            return failing[1], {}, json.dumps(failure(10001, "injected failure"))
        self.served[route] += 1
        return None

    def _bulk_get(self, request: PreparedRequest) -> Response:
        fault = self._fault("bulk_get")
        if fault is not None:
            return fault
        body = json.loads(request.body or b"{}")
        values: dict[str, Any] = {}
        for key in body["keys"]:
            entry = self.entries.get(key)
            if entry is None:
                values[key] = None
                continue
            try:
                text = entry.value.decode("utf-8")
            except UnicodeDecodeError:
                return 400, {}, json.dumps(failure(NOT_TEXT, f"{key!r} is not valid UTF-8"))
            values[key] = bulk_entry(text, entry.metadata, entry.expiration)
        return 200, {}, json.dumps(bulk_values_reply(values))

    def _list(self, request: PreparedRequest) -> Response:
        for hook in self.before_list:
            hook()
        fault = self._fault("list")
        if fault is not None:
            return fault
        query = {
            name: vals[0] for name, vals in parse_qs(urlsplit(request.url or "").query).items()
        }
        limit = int(query.get("limit", "1000"))
        prefix = query.get("prefix", "").encode("utf-8")
        after = query.get("cursor", "").encode("utf-8")
        names = sorted(
            raw
            for raw in (key.encode("utf-8") for key in self.entries)
            if raw.startswith(prefix) and raw > after
        )
        page = [raw.decode("utf-8") for raw in names[:limit]]
        cursor = page[-1] if len(names) > limit else ""
        return 200, {}, json.dumps(list_keys_reply(page, cursor))

    def _entry(self, request: PreparedRequest) -> KVValue | None:
        return self.entries.get(unquote(urlsplit(request.url or "").path.rsplit("/", 1)[-1]))

    def _value(self, request: PreparedRequest) -> Response:
        entry = self._entry(request)
        if entry is None:
            return 404, {}, json.dumps(failure(KEY_NOT_FOUND, "get: 'key not found'"))
        headers = {} if entry.expiration is None else {"expiration": str(entry.expiration)}
        return 200, headers, entry.value

    def _metadata(self, request: PreparedRequest) -> Response:
        entry = self._entry(request)
        if entry is None:
            return 404, {}, json.dumps(failure(KEY_NOT_FOUND, "get: 'key not found'"))
        return 200, {}, json.dumps(envelope(entry.metadata))
