"""Integration tests of the Cloudflare Workers KV API emulator in ``local/``.

Every test talks to the emulator over real loopback sockets. Paths, parameters,
envelopes and limits are checked against the copy of Cloudflare's OpenAPI description
in ``local/kv-openapi.json`` rather than against constants repeated here.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import requests

from local.kv_emulator import ROUTES, KVEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
SPEC: dict[str, Any] = json.loads((ROOT / "local" / "kv-openapi.json").read_text())
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]
NS_TEMPLATE = "/accounts/{account_id}/storage/kv/namespaces/{namespace_id}"
KEYS_TEMPLATE = NS_TEMPLATE + "/keys"
VALUES_TEMPLATE = NS_TEMPLATE + "/values/{key_name}"
METADATA_TEMPLATE = NS_TEMPLATE + "/metadata/{key_name}"
BULK_GET_TEMPLATE = NS_TEMPLATE + "/bulk/get"
USED_OPERATIONS = {
    ("GET", KEYS_TEMPLATE),
    ("POST", BULK_GET_TEMPLATE),
    ("GET", VALUES_TEMPLATE),
    ("GET", METADATA_TEMPLATE),
}
SPEC_OPERATIONS = sorted(
    (method.upper(), path)
    for path, item in SPEC["paths"].items()
    for method in item
    if method in {"get", "put", "post", "delete", "patch"}
)
TOKEN = "test-token"
NOW = 1_900_000_000  # a far future expiration, as epoch seconds
# Cloudflare's documented formats: "default";r=50;t=30 and "burst";q=100;w=60
RATELIMIT = re.compile(r'"default";r=(\d+);t=(\d+)')
RATELIMIT_POLICY = re.compile(r'"default";q=(\d+);w=(\d+)')


# --------------------------------------------------------------------------- helpers


def _deref(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def schema_errors(instance: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """A small validator for the OpenAPI 3.0 subset the KV spec uses."""
    schema = _deref(schema)
    errors: list[str] = []
    for sub in schema.get("allOf", []):
        errors += schema_errors(instance, sub, where)
    for keyword in ("anyOf", "oneOf"):  # oneOf is checked as anyOf (string vs binary string)
        if keyword in schema and all(schema_errors(instance, s, where) for s in schema[keyword]):
            errors.append(f"{where}: matches no {keyword} alternative")
    kind = schema.get("type")
    if instance is None:
        if kind is not None and not schema.get("nullable"):
            errors.append(f"{where}: null is not allowed")
        return errors
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    }
    if kind is not None and not checks[kind](instance):
        return [*errors, f"{where}: expected {kind}, got {type(instance).__name__}"]
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{where}: {instance!r} not in {schema['enum']}")
    if isinstance(instance, dict):
        for name in schema.get("required", []):
            if name not in instance:
                errors.append(f"{where}: missing required {name!r}")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, value in instance.items():
            if name in properties:
                errors += schema_errors(value, properties[name], f"{where}.{name}")
            elif isinstance(extra, dict):
                errors += schema_errors(value, extra, f"{where}.{name}")
    if isinstance(instance, list):
        if "maxItems" in schema and len(instance) > schema["maxItems"]:
            errors.append(f"{where}: more than {schema['maxItems']} items")
        for index, item in enumerate(instance):
            if "items" in schema:
                errors += schema_errors(item, schema["items"], f"{where}[{index}]")
    if isinstance(instance, str) and len(instance) > schema.get("maxLength", len(instance)):
        errors.append(f"{where}: longer than {schema['maxLength']}")
    if isinstance(instance, int | float) and instance < schema.get("minimum", instance):
        errors.append(f"{where}: below {schema['minimum']}")
    return errors


def operation(template: str, method: str) -> dict[str, Any]:
    op: dict[str, Any] = SPEC["paths"][template][method.lower()]
    return op


def response_schema(template: str, method: str, status: int) -> dict[str, Any]:
    entry = operation(template, method)["responses"]["200" if status == 200 else "4XX"]
    schema: dict[str, Any] = entry["content"]["application/json"]["schema"]
    return schema


def assert_matches_spec(response: requests.Response, template: str, method: str) -> Any:
    body = response.json()
    errors = schema_errors(body, response_schema(template, method, response.status_code))
    assert errors == [], errors
    return body


def spec_param(template: str, method: str, name: str) -> dict[str, Any]:
    for param in operation(template, method)["parameters"]:
        if param["name"] == name:
            schema: dict[str, Any] = _deref(param["schema"])
            return schema
    raise KeyError(name)


def ns_url(emu: KVEmulator, namespace_id: str) -> str:
    return f"{emu.base_url}/accounts/{emu.account_id}/storage/kv/namespaces/{namespace_id}"


def value_url(emu: KVEmulator, namespace_id: str, key: str) -> str:
    return f"{ns_url(emu, namespace_id)}/values/{quote(key, safe='')}"


def raw_get(emu: KVEmulator, path: str) -> tuple[int, bytes]:
    """Send ``path`` exactly as given (no normalisation, no encoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def error_code(response: requests.Response) -> int:
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    code: int = body["errors"][0]["code"]
    return code


def list_all(api: requests.Session, url: str, **params: str) -> list[dict[str, Any]]:
    """A simple client: follow the cursor until it is empty; every page's body, in order."""
    pages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        response = api.get(url, params=params | ({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["result_info"]["cursor"]
        if not cursor:
            return pages
        assert len(pages) < 100, "the cursor never ends"


def names(pages: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for page in pages for item in page["result"]]


class FakeClock:
    """A monotonic clock the test moves by hand (for the rate-limit window)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emu() -> Iterator[KVEmulator]:
    emulator = KVEmulator(tokens=[TOKEN], seed=1234)
    with emulator:
        yield emulator


@pytest.fixture
def ns(emu: KVEmulator) -> str:
    return emu.create_namespace("kv-emulator-test")


@pytest.fixture
def api() -> Iterator[requests.Session]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    with session:
        yield session


@pytest.fixture
def clock(emu: KVEmulator, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(emu, "_monotonic", fake)
    return fake


# --------------------------------------------------------------------------- spec conformance


def test_spec_copy_names_its_source() -> None:
    # GIVEN the repository copy of the spec
    source = SPEC["x-source"]
    # THEN it says which official repository and commit it was taken from
    assert source["repository"] == "cloudflare/api-schemas"
    assert len(source["commit"]) == 40
    assert SPEC["servers"][0]["url"].endswith("/client/v4")


def test_routes_are_the_four_used_operations_with_spec_parameters() -> None:
    # GIVEN the emulator's routing table
    # THEN it serves exactly the four operations the function calls
    assert {(r.method, r.template) for r in ROUTES} == USED_OPERATIONS
    for route in ROUTES:
        # AND each has exactly the path and query parameters of the spec's operation
        op = operation(route.template, route.method)
        path_params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        query_params = {p["name"] for p in op["parameters"] if p["in"] == "query"}
        placeholders = {s[1:-1] for s in route.template.split("/") if s.startswith("{")}
        assert path_params == placeholders, route
        assert query_params == set(route.query_params), route
    assert set(next(r for r in ROUTES if r.template == KEYS_TEMPLATE).query_params) == {
        "prefix",
        "limit",
        "cursor",
    }


def test_success_envelopes_match_spec_schemas(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a key holding metadata and an expiration, and one without either
    emu.put(ns, "k1", "v1", metadata={"a": 1}, expiration=NOW)
    emu.put(ns, "k2", "v2")
    base = ns_url(emu, ns)
    # WHEN every JSON operation is called
    # (missing keys are not asked for here: the emulator answers null for them, which the
    # spec's text-only result schema does not list; see test_bulk_get_text_json_and_metadata)
    calls = [
        (KEYS_TEMPLATE, "GET", api.get(f"{base}/keys")),
        (METADATA_TEMPLATE, "GET", api.get(f"{base}/metadata/k1")),
        (METADATA_TEMPLATE, "GET", api.get(f"{base}/metadata/k2")),
        (BULK_GET_TEMPLATE, "POST", api.post(f"{base}/bulk/get", json={"keys": ["k1", "k2"]})),
        (
            BULK_GET_TEMPLATE,
            "POST",
            api.post(f"{base}/bulk/get", json={"keys": ["k1", "k2"], "withMetadata": True}),
        ),
    ]
    # THEN each answers 200 with a body valid against the spec's response schema
    for template, method, response in calls:
        assert response.status_code == 200, (template, method, response.text)
        body = assert_matches_spec(response, template, method)
        assert body["success"] is True
        assert body["errors"] == []
    keys_body = calls[0][2].json()
    assert set(keys_body["result_info"]) == set(
        SCHEMAS["workers-kv_cursor_result_info"]["properties"]
    )
    assert keys_body["result"] == [
        {"name": "k1", "expiration": NOW, "metadata": {"a": 1}},
        {"name": "k2"},
    ]


def test_failure_envelopes_match_spec_schema(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN an empty namespace
    base = ns_url(emu, ns)
    # WHEN requests fail for different reasons
    failures = [
        (METADATA_TEMPLATE, "GET", api.get(f"{base}/metadata/missing")),
        (VALUES_TEMPLATE, "GET", api.get(f"{base}/values/missing")),
        (KEYS_TEMPLATE, "GET", api.get(f"{base}/keys", params={"limit": 5})),
        (KEYS_TEMPLATE, "GET", requests.get(f"{base}/keys")),
        (BULK_GET_TEMPLATE, "POST", api.post(f"{base}/bulk/get", json={"nokeys": 1})),
    ]
    # THEN each is a failure envelope valid against the spec, with codes >= 1000
    for template, method, response in failures:
        assert 400 <= response.status_code < 500
        body = assert_matches_spec(response, template, method)
        assert body["success"] is False
        assert body["errors"]
        assert all(e["code"] >= 1000 and e["message"] for e in body["errors"])


@pytest.mark.parametrize(
    ("method", "template"),
    [op for op in SPEC_OPERATIONS if op not in USED_OPERATIONS],
)
def test_removed_operations_answer_like_unknown_routes(
    emu: KVEmulator, ns: str, api: requests.Session, method: str, template: str
) -> None:
    # GIVEN a spec operation the function does not call, and a stored key
    emu.put(ns, "k", "v")
    path = template.format(account_id=emu.account_id, namespace_id=ns, key_name="k")
    # WHEN it is called
    response = api.request(method, emu.base_url + path, json={"title": "t"})
    # THEN it is a 405 on a path that another served operation uses, else "No route" 404
    served_paths = {t for _, t in USED_OPERATIONS}
    expected = (405, 7001) if template in served_paths else (404, 7003)
    assert (response.status_code, error_code(response)) == expected
    assert emu.keys(ns) == ["k"]
    assert emu.requests[-1].route == (template if template in served_paths else None)


def test_unknown_paths_are_404(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # WHEN calling paths outside the API
    responses = [
        api.get(f"{ns_url(emu, ns)}/nothing"),
        api.get(f"{emu.base_url}/accounts"),
        api.get(emu.base_url.replace("/client/v4", "/v3") + "/x"),
    ]
    # THEN all are 404 / 7003 "No route for the URI"
    for response in responses:
        assert (response.status_code, error_code(response)) == (404, 7003)
        assert response.json()["errors"][0]["message"] == "No route for the URI"


# --------------------------------------------------------------------------- limits


def test_list_limit_range_comes_from_spec(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN the spec's bounds for the list-keys limit
    limit = spec_param(KEYS_TEMPLATE, "GET", "limit")
    low, high = limit["minimum"], limit["maximum"]
    assert (low, high, limit["default"]) == (10, 1000, 1000)
    url = f"{ns_url(emu, ns)}/keys"
    # WHEN limits at and beyond the bounds are sent
    # THEN the bounds are accepted and anything outside is a 400 failure envelope
    for ok in (low, high):
        assert api.get(url, params={"limit": ok}).status_code == 200
    for bad in (low - 1, high + 1, "abc", "10.5", "inf"):
        response = api.get(url, params={"limit": bad})
        assert (response.status_code, error_code(response)) == (400, 10010)


def test_list_default_limit_is_spec_default(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN more keys than the spec's default limit
    default = int(spec_param(KEYS_TEMPLATE, "GET", "limit")["default"])
    for i in range(default + 5):
        emu.put(ns, f"k{i:05d}", "v")
    # WHEN listing without a limit
    body = api.get(f"{ns_url(emu, ns)}/keys").json()
    # THEN one page holds exactly the default and a cursor is returned
    assert body["result_info"]["count"] == default
    assert body["result_info"]["cursor"] != ""


def test_bulk_get_max_keys_comes_from_spec(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN the spec's maxItems for bulk get
    body_schema = operation(BULK_GET_TEMPLATE, "POST")["requestBody"]["content"][
        "application/json"
    ]["schema"]
    max_keys = body_schema["properties"]["keys"]["maxItems"]
    assert max_keys == 100
    url = f"{ns_url(emu, ns)}/bulk/get"
    # WHEN asking for exactly max and max + 1 keys
    ok = api.post(url, json={"keys": [f"k{i}" for i in range(max_keys)]})
    too_many = api.post(url, json={"keys": [f"k{i}" for i in range(max_keys + 1)]})
    # THEN the first succeeds (missing keys are null) and the second is a 400
    assert ok.status_code == 200
    assert ok.json()["result"]["values"] == {f"k{i}": None for i in range(max_keys)}
    assert (too_many.status_code, error_code(too_many)) == (400, 10024)


def test_key_name_byte_limit_comes_from_spec(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN the spec's maximum key name length (bytes) and a key exactly at it
    max_bytes = SCHEMAS["workers-kv_key_name"]["maxLength"]
    assert max_bytes == 512
    longest = "é" * (max_bytes // 2)  # 2 bytes each: exactly at the limit
    too_long = longest + "a"
    emu.put(ns, longest, "x")
    # WHEN keys at and beyond the limit are read
    get_long = api.get(value_url(emu, ns, too_long))
    meta_long = api.get(f"{ns_url(emu, ns)}/metadata/{quote(too_long, safe='')}")
    bulk_long = api.post(f"{ns_url(emu, ns)}/bulk/get", json={"keys": [too_long]})
    # THEN the limit is accepted and one byte more is a 400 everywhere
    assert api.get(value_url(emu, ns, longest)).content == b"x"
    for response in (get_long, meta_long, bulk_long):
        assert (response.status_code, error_code(response)) == (400, 10016)
    with pytest.raises(ValueError, match="512"):
        emu.put(ns, too_long, "x")


def test_seeding_enforces_value_and_metadata_limits(emu: KVEmulator, ns: str) -> None:
    # GIVEN the spec's 25 MiB value limit and Cloudflare's 1024-byte metadata limit
    max_value = SCHEMAS["workers-kv_bulk_write"]["items"]["properties"]["value"]["maxLength"]
    assert max_value == 25 * 1024 * 1024
    # WHEN seeding at and beyond the limits
    emu.put(ns, "max", b"\0" * max_value, metadata={"m": "x" * 1000})
    # THEN the limits are accepted and anything beyond them is refused
    with pytest.raises(ValueError, match="Value too large"):
        emu.put(ns, "big", b"\0" * (max_value + 1))
    with pytest.raises(ValueError, match="1024"):
        emu.put(ns, "meta", "v", metadata={"m": "x" * 1100})
    with pytest.raises(ValueError, match="JSON"):
        emu.put(ns, "meta", "v", metadata={"m": object()})
    assert emu.keys(ns) == ["max"]


# --------------------------------------------------------------------------- seeding API


def test_seeding_api_round_trip(emu: KVEmulator, ns: str) -> None:
    # GIVEN keys seeded as text, bytes, with an expiration in the past and in the future
    emu.put(ns, "b", "text")
    emu.put(ns, "a", b"\xff\x00")
    emu.put(ns, "old", "gone", expiration=1)
    emu.put(ns, "new", "later", expiration=NOW)
    # WHEN they are read back, one is deleted (twice) and a duplicate namespace is made
    # THEN values are bytes, expired keys are absent and keys are in list order
    assert (emu.get(ns, "b"), emu.get(ns, "a"), emu.get(ns, "old")) == (b"text", b"\xff\x00", None)
    assert emu.keys(ns) == ["a", "b", "new"]
    emu.delete(ns, "b")
    emu.delete(ns, "b")
    assert emu.keys(ns) == ["a", "new"]
    with pytest.raises(ValueError, match="already exists"):
        emu.create_namespace("kv-emulator-test")
    assert emu.create_namespace("other", "f" * 32) == "f" * 32
    with pytest.raises(ValueError, match="already exists"):
        emu.create_namespace("third", "f" * 32)
    with pytest.raises(KeyError):
        emu.put("0" * 32, "k", "v")


# --------------------------------------------------------------------------- reads


def test_read_value_returns_exact_binary_bytes(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a key holding every byte value, without expiration
    value = bytes(range(256)) * 3
    emu.put(ns, "bin", value)
    # WHEN it is read
    response = api.get(value_url(emu, ns, "bin"))
    # THEN the exact bytes come back as octet-stream with no expiration header
    assert response.status_code == 200
    assert response.content == value
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert "expiration" not in response.headers


def test_read_value_sends_expiration_header(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a key with an expiration
    emu.put(ns, "exp", "v", expiration=NOW)
    # WHEN it is read
    response = api.get(value_url(emu, ns, "exp"))
    # THEN the expiration header carries the epoch seconds
    assert response.headers["expiration"] == str(NOW)


def test_missing_key_and_namespace_are_404(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # WHEN reading a missing key, its metadata, and a key of an unknown namespace
    value = api.get(value_url(emu, ns, "nope"))
    metadata = api.get(f"{ns_url(emu, ns)}/metadata/nope")
    unknown_ns = api.get(value_url(emu, "0" * 32, "k"))
    unknown_list = api.get(f"{ns_url(emu, '0' * 32)}/keys")
    # THEN all are 404 failure envelopes with the documented codes
    assert (value.status_code, error_code(value)) == (404, 10009)
    assert value.json()["errors"][0]["message"] == "get: 'key not found'"
    assert (metadata.status_code, error_code(metadata)) == (404, 10009)
    assert (unknown_ns.status_code, error_code(unknown_ns)) == (404, 10013)
    assert (unknown_list.status_code, error_code(unknown_list)) == (404, 10013)


def test_expired_key_behaves_as_missing(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a key whose expiration has passed and a live one
    emu.put(ns, "old", "v", expiration=1)
    emu.put(ns, "live", "v")
    # WHEN they are read, listed and bulk read
    value = api.get(value_url(emu, ns, "old"))
    metadata = api.get(f"{ns_url(emu, ns)}/metadata/old")
    listed = api.get(f"{ns_url(emu, ns)}/keys").json()["result"]
    bulk = api.post(f"{ns_url(emu, ns)}/bulk/get", json={"keys": ["old", "live"]}).json()
    # THEN the expired key is absent everywhere
    assert (value.status_code, metadata.status_code) == (404, 404)
    assert [k["name"] for k in listed] == ["live"]
    assert bulk["result"]["values"] == {"old": None, "live": "v"}


def test_metadata_endpoint(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN keys with and without metadata
    emu.put(ns, "with", "v", metadata={"owner": "me", "n": [1, 2]})
    emu.put(ns, "without", "v")
    # WHEN their metadata is read
    with_meta = api.get(f"{ns_url(emu, ns)}/metadata/with").json()
    without_meta = api.get(f"{ns_url(emu, ns)}/metadata/without").json()
    # THEN the result is the metadata, or null
    assert with_meta["result"] == {"owner": "me", "n": [1, 2]}
    assert without_meta["success"] is True
    assert without_meta["result"] is None


@pytest.mark.parametrize("key", ["a/b?c#d", "../../tokens/verify", "%2F", "sp ace+plus:!", "é€😀"])
def test_special_keys_reachable_by_single_encoded_segment(
    emu: KVEmulator, ns: str, api: requests.Session, key: str
) -> None:
    # GIVEN a stored key with characters that are special in URLs
    emu.put(ns, key, f"value of {key}")
    # WHEN it is read through its fully percent-encoded single path segment
    response = api.get(value_url(emu, ns, key))
    metadata = api.get(f"{ns_url(emu, ns)}/metadata/{quote(key, safe='')}")
    # THEN it is found, and the recorded request keeps the raw path and the decoded key
    assert response.status_code == 200
    assert response.content == f"value of {key}".encode()
    assert metadata.status_code == 200
    record = emu.requests[0]
    assert record.key == key
    assert record.path.endswith("/values/" + quote(key, safe=""))


def test_unencoded_special_keys_are_not_the_same_key(emu: KVEmulator, ns: str) -> None:
    # GIVEN keys "a/b?c#d", "../../tokens/verify" and "%2F"
    for key in ("a/b?c#d", "../../tokens/verify", "%2F"):
        emu.put(ns, key, "secret")
    prefix = f"/client/v4/accounts/{emu.account_id}/storage/kv/namespaces/{ns}"
    # WHEN they are requested with raw (not or not fully encoded) paths on the wire
    raw_slash = raw_get(emu, f"{prefix}/values/a/b?c#d")
    dots = raw_get(emu, f"{prefix}/values/../../tokens/verify")
    half_encoded = raw_get(emu, f"{prefix}/values/a%2Fb?c%23d")
    once_decoded = raw_get(emu, f"{prefix}/values/%2F")
    not_utf8 = raw_get(emu, f"{prefix}/values/%FF")
    # THEN the raw slash does not match the route, the others name different keys
    assert raw_slash[0] == 404
    assert json.loads(raw_slash[1])["errors"][0]["code"] == 7003
    assert dots[0] == 404
    assert json.loads(dots[1])["errors"][0]["code"] == 7003
    assert half_encoded[0] == 404  # key "a/b" (the query string is not part of the name)
    assert json.loads(half_encoded[1])["errors"][0]["code"] == 10009
    assert once_decoded[0] == 404  # decoded exactly once: key "/" not "%2F"
    assert raw_get(emu, f"{prefix}/values/%252F") == (200, b"secret")
    assert (not_utf8[0], json.loads(not_utf8[1])["errors"][0]["code"]) == (400, 10016)


# --------------------------------------------------------------------------- bulk get


def test_bulk_get_text_json_and_metadata(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN text and JSON values, one with metadata and expiration
    emu.put(ns, "t", "plain text", metadata={"m": 1}, expiration=NOW)
    emu.put(ns, "j", json.dumps({"x": [1, 2]}))
    url = f"{ns_url(emu, ns)}/bulk/get"
    # WHEN bulk reading as text, as json, and with metadata
    text = api.post(url, json={"keys": ["t", "j", "missing"]}).json()["result"]
    as_json = api.post(url, json={"keys": ["j"], "type": "json"}).json()["result"]
    with_meta = api.post(url, json={"keys": ["t", "j", "missing"], "withMetadata": True})
    # THEN values are returned in the order asked (missing ones as null); expiration when set
    assert text == {"values": {"t": "plain text", "j": '{"x": [1, 2]}', "missing": None}}
    assert list(text["values"]) == ["t", "j", "missing"]
    assert as_json == {"values": {"j": {"x": [1, 2]}}}
    assert with_meta.json()["result"] == {
        "values": {
            "t": {"value": "plain text", "metadata": {"m": 1}, "expiration": NOW},
            "j": {"value": '{"x": [1, 2]}', "metadata": None},
            "missing": None,
        }
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", 10012),
        (b"[]", 10012),
        (b'{"keys": "k"}', 10012),
        (b'{"keys": [1]}', 10012),
        (b'{"keys": ["text"], "type": "arrayBuffer"}', 10012),
        (b'{"keys": ["text"], "withMetadata": "yes"}', 10012),
        (b'{"keys": [""]}', 10016),
        (b'{"keys": ["text"], "type": "json"}', 10026),
        (b'{"keys": ["text", "bin"]}', 10025),
    ],
)
def test_bulk_get_refusals(
    emu: KVEmulator, ns: str, api: requests.Session, body: bytes, code: int
) -> None:
    # GIVEN a text value that is not JSON and a binary value that is not UTF-8
    emu.put(ns, "text", "not json")
    emu.put(ns, "bin", b"\xff\xfe\x00")
    # WHEN a bulk get is malformed or asks for what bulk get cannot return
    response = api.post(f"{ns_url(emu, ns)}/bulk/get", data=body)
    # THEN it is a 400 failure envelope with the documented code
    assert (response.status_code, error_code(response)) == (400, code)


def test_bulk_get_lossy_text_switch(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a value that is not UTF-8, one that is, and the lossy-text switch on
    emu.put(ns, "bin", b"ok\xff\xfe!")
    emu.put(ns, "text", "caf\u00e9")
    emu.put(ns, "json-ish", b'{"a": "\xff"}')
    url = f"{ns_url(emu, ns)}/bulk/get"
    assert emu.bulk_get_lossy_text is False
    emu.bulk_get_lossy_text = True
    # WHEN they are bulk read as text, with metadata, and as JSON
    text = api.post(url, json={"keys": ["bin", "text"]})
    meta = api.post(url, json={"keys": ["bin"], "withMetadata": True})
    as_json = api.post(url, json={"keys": ["json-ish"], "type": "json"})
    emu.bulk_get_lossy_text = False
    strict = api.post(url, json={"keys": ["bin", "text"]})
    # THEN they come back decoded with U+FFFD replacement characters, as bytes.decode would
    assert text.status_code == 200
    assert text.json()["result"]["values"] == {"bin": "ok\ufffd\ufffd!", "text": "caf\u00e9"}
    assert meta.json()["result"]["values"]["bin"] == {"value": "ok\ufffd\ufffd!", "metadata": None}
    assert as_json.json()["result"]["values"] == {"json-ish": {"a": "\ufffd"}}
    # AND with the switch off the same batch is refused again
    assert (strict.status_code, error_code(strict)) == (400, 10025)


def test_bulk_get_size_limit_refuses_large_batches_with_413(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a 1,000-byte limit, values of 400 + 600 bytes, metadata and a missing key
    emu.bulk_get_max_bytes = 1000
    emu.put(ns, "a", "a" * 400, metadata={"big": "m" * 900})
    emu.put(ns, "b", "b" * 600)
    emu.put(ns, "c", "c")
    url = f"{ns_url(emu, ns)}/bulk/get"
    # WHEN batches at and over the limit are asked for
    at_limit = api.post(url, json={"keys": ["a", "b", "a", "missing"], "withMetadata": True})
    over = api.post(url, json={"keys": ["a", "b", "c"]})
    # THEN exactly the limit passes (metadata, missing keys and repeats do not count)
    assert at_limit.status_code == 200
    assert set(at_limit.json()["result"]["values"]) == {"a", "b", "missing"}
    # AND one byte more is a 413 failure envelope valid against the spec
    assert over.status_code == 413
    assert error_code(over) == 10011
    assert "1000" in over.json()["errors"][0]["message"]
    assert schema_errors(over.json(), SCHEMAS["workers-kv_api-response-common-failure"]) == []
    # AND a client that splits the batch gets everything
    halves = [api.post(url, json={"keys": keys}) for keys in (["a", "c"], ["b"])]
    assert [r.status_code for r in halves] == [200, 200]


def test_bulk_get_size_limit_defaults_to_25_mib(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN the default limit and two 13 MiB values (26 MiB together)
    assert emu.bulk_get_max_bytes == 25 * 1024 * 1024
    emu.put(ns, "a", b"a" * 13 * 1024 * 1024)
    emu.put(ns, "b", b"b" * 13 * 1024 * 1024)
    # WHEN both are asked for in one bulk get
    response = api.post(f"{ns_url(emu, ns)}/bulk/get", json={"keys": ["a", "b"]})
    # THEN it is refused with 413 before any value is sent
    assert (response.status_code, error_code(response)) == (413, 10011)


# --------------------------------------------------------------------------- listing


def test_list_keys_prefix_and_cursor_pagination(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN 35 keys under "p/" (in scrambled order) and a few others
    wanted = [f"p/{i:03d}" for i in range(35)]
    for name in reversed(wanted):
        emu.put(ns, name, "v")
    for other in ("a", "q/1", "p"):
        emu.put(ns, other, "v")
    # WHEN listing the prefix page by page with limit 10
    pages = list_all(api, f"{ns_url(emu, ns)}/keys", prefix="p/", limit="10")
    # THEN pages of 10, 10, 10, 5 cover exactly the prefix in order; the last cursor is ""
    assert [len(p["result"]) for p in pages] == [10, 10, 10, 5]
    assert [p["result_info"]["count"] for p in pages] == [10, 10, 10, 5]
    assert names(pages) == wanted
    cursors = [p["result_info"]["cursor"] for p in pages]
    assert cursors[-1] == ""
    assert all(c and c not in wanted for c in cursors[:-1])  # opaque, not the key name


def test_list_keys_sorted_by_utf8_bytes(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN keys mixing case, accents, and characters beyond the BMP
    keys = ["b", "B", "a", "é", "\uffff", "\U0001f600", "a0", "~"]
    for name in keys:
        emu.put(ns, name, "v")
    # WHEN listing
    listed = [k["name"] for k in api.get(f"{ns_url(emu, ns)}/keys").json()["result"]]
    # THEN the order is the UTF-8 byte order
    assert listed == sorted(keys, key=lambda n: n.encode("utf-8"))
    assert emu.keys(ns) == listed


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!not-base64",
        base64.urlsafe_b64encode(b"plain text").decode(),
        base64.urlsafe_b64encode(b'{"a": 1}').decode(),
        base64.urlsafe_b64encode(b'["k", -1]').decode(),
        base64.urlsafe_b64encode(b"[3, 0]").decode(),
    ],
)
def test_list_keys_rejects_garbage_cursor(
    emu: KVEmulator, ns: str, api: requests.Session, cursor: str
) -> None:
    # WHEN listing with a cursor that the emulator never issued
    response = api.get(f"{ns_url(emu, ns)}/keys", params={"cursor": cursor})
    # THEN it is a 400
    assert (response.status_code, error_code(response)) == (400, 10010)


def test_empty_pages_first(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN 25 keys and the first three pages of every listing empty
    for i in range(25):
        emu.put(ns, f"k{i:02d}", "v")
    emu.list_empty_pages_first = 3
    # WHEN a client follows the cursor to the end, twice
    first = list_all(api, f"{ns_url(emu, ns)}/keys", limit="10")
    second = list_all(api, f"{ns_url(emu, ns)}/keys", limit="10")
    # THEN three empty pages with a cursor come first, then the real pages, each key once
    assert [len(p["result"]) for p in first] == [0, 0, 0, 10, 10, 5]
    assert names(first) == [f"k{i:02d}" for i in range(25)]
    for page in first[:3]:
        assert page["result_info"] == {"count": 0, "cursor": page["result_info"]["cursor"]}
        assert page["result_info"]["cursor"] != ""
        assert schema_errors(page, response_schema(KEYS_TEMPLATE, "GET", 200)) == []
    assert [len(p["result"]) for p in second] == [0, 0, 0, 10, 10, 5]


def test_empty_pages_between_makes_every_other_page_empty(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN 25 keys and one empty page before every page after the first
    for i in range(25):
        emu.put(ns, f"k{i:02d}", "v")
    emu.list_empty_pages_between = 1
    # WHEN a client follows the cursor to the end
    pages = list_all(api, f"{ns_url(emu, ns)}/keys", limit="10")
    # THEN every other page is empty and no key is lost or repeated
    assert [len(p["result"]) for p in pages] == [10, 0, 10, 0, 5]
    assert names(pages) == [f"k{i:02d}" for i in range(25)]


def test_empty_pages_with_prefix_and_empty_listing(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN keys outside the prefix, and two empty pages first, two between
    for i in range(12):
        emu.put(ns, f"p/{i:02d}", "v")
    emu.put(ns, "q", "v")
    emu.list_empty_pages_first = emu.list_empty_pages_between = 2
    # WHEN listing a prefix with keys and one without
    with_keys = list_all(api, f"{ns_url(emu, ns)}/keys", prefix="p/", limit="10")
    nothing = list_all(api, f"{ns_url(emu, ns)}/keys", prefix="zzz")
    # THEN the empty pages come and the listing still ends with a "" cursor
    assert [len(p["result"]) for p in with_keys] == [0, 0, 10, 0, 0, 2]
    assert names(with_keys) == [f"p/{i:02d}" for i in range(12)]
    assert [len(p["result"]) for p in nothing] == [0, 0, 0]


# --------------------------------------------------------------------------- auth


def test_auth_failures_and_token_rotation(emu: KVEmulator, ns: str) -> None:
    # GIVEN a stored key
    emu.put(ns, "k", "v")
    url = value_url(emu, ns, "k")
    # WHEN requests come without a token, with a wrong one, and for another account
    missing = requests.get(url)
    wrong = requests.get(url, headers={"Authorization": "Bearer nope"})
    basic = requests.get(url, headers={"Authorization": f"Basic {TOKEN}"})
    other_account = requests.get(
        url.replace(emu.account_id, "f" * 32), headers={"Authorization": f"Bearer {TOKEN}"}
    )
    # THEN 401 (or 403 for the account) with code 10000 "Authentication error"
    for response in (missing, wrong, basic):
        assert response.status_code == 401
        assert response.json()["errors"] == [{"code": 10000, "message": "Authentication error"}]
    assert (other_account.status_code, error_code(other_account)) == (403, 10000)
    # WHEN the accepted tokens are rotated
    emu.set_tokens(["new-token"])
    old = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    new = requests.get(url, headers={"Authorization": "Bearer new-token"})
    # THEN only the new token works
    assert old.status_code == 401
    assert new.status_code == 200
    assert emu.requests[-1].headers["Authorization"] == "Bearer new-token"


# --------------------------------------------------------------------------- faults


def test_fault_status_with_retry_after(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a stored key and one injected 429 with Retry-After
    emu.put(ns, "k", "v")
    emu.add_fault(status=429, retry_after="7")
    # WHEN the key is read twice
    first = api.get(value_url(emu, ns, "k"))
    second = api.get(value_url(emu, ns, "k"))
    # THEN the first gets the fault as a failure envelope, the second the value
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "7"
    assert error_code(first) == 10429
    assert second.content == b"v"
    assert [r.status for r in emu.requests] == [429, 200]
    assert [r.faulted for r in emu.requests] == [True, False]


def test_fault_matching_by_path_method_and_times(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN two 503 faults on list-keys GETs only, and a 401 fault on bulk gets
    emu.put(ns, "k", "v")
    emu.add_fault(status=503, times=2, path_contains="/keys", method="get")
    emu.add_fault(status=401, path_contains="/bulk/get")
    # WHEN values, keys and bulk gets are requested
    value = api.get(value_url(emu, ns, "k"))
    keys = [api.get(f"{ns_url(emu, ns)}/keys").status_code for _ in range(3)]
    bulk = api.post(f"{ns_url(emu, ns)}/bulk/get", json={"keys": ["k"]})
    # THEN only the first two list requests fail, and the bulk get gets the auth error
    assert value.status_code == 200
    assert keys == [503, 503, 200]
    assert (bulk.status_code, error_code(bulk)) == (401, 10000)


def test_fault_forever_until_cleared(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a permanent 500 fault
    emu.add_fault(status=500, times=-1)
    # WHEN requests are made before and after clearing faults
    before = [api.get(f"{ns_url(emu, ns)}/keys").status_code for _ in range(4)]
    emu.clear_faults()
    after = api.get(f"{ns_url(emu, ns)}/keys").status_code
    # THEN every request fails until cleared
    assert before == [500] * 4
    assert after == 200


def test_fault_delay(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a slow response
    emu.put(ns, "k", "v")
    emu.add_fault(delay=1.0)
    # WHEN a client with a short read timeout reads, then reads again
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.get(value_url(emu, ns, "k"), timeout=0.2)
    # THEN the first times out and the next one is answered normally
    assert api.get(value_url(emu, ns, "k"), timeout=5).content == b"v"


def test_fault_drop_connection(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a dropped connection fault
    emu.put(ns, "k", "v")
    emu.add_fault(drop_connection=True)
    # WHEN reading the key
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get(value_url(emu, ns, "k"))
    # THEN no status was sent, and the next request works
    assert emu.requests[-1].status is None
    assert api.get(value_url(emu, ns, "k")).content == b"v"


@pytest.mark.parametrize("switch", ["reset_mid_body", "truncate_body"])
def test_fault_broken_bodies(emu: KVEmulator, ns: str, api: requests.Session, switch: str) -> None:
    # GIVEN a large value and a fault that breaks the body
    emu.put(ns, "k", b"x" * 100_000)
    if switch == "reset_mid_body":
        emu.add_fault(reset_mid_body=True)
    else:
        emu.add_fault(truncate_body=True)
    # WHEN it is read
    # THEN requests reports a broken body, and the next read works
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        api.get(value_url(emu, ns, "k"))
    assert api.get(value_url(emu, ns, "k")).content == b"x" * 100_000


def test_fault_html_body(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN HTML error page faults, with the default and an explicit status
    emu.add_fault(html_body=True)
    emu.add_fault(html_body=True, status=503)
    # WHEN requests are made
    first = api.get(f"{ns_url(emu, ns)}/keys")
    second = api.get(f"{ns_url(emu, ns)}/keys")
    # THEN they get text/html pages instead of JSON
    assert first.status_code == 502
    assert first.headers["Content-Type"].startswith("text/html")
    assert "<html>" in first.text
    assert "502 Bad Gateway" in first.text
    assert second.status_code == 503
    with pytest.raises(ValueError):
        second.json()


def test_fault_envelope_failure(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a 200-with-failure-envelope fault
    emu.add_fault(envelope_failure=True)
    # WHEN listing keys
    response = api.get(f"{ns_url(emu, ns)}/keys")
    # THEN HTTP 200 carries success false and a spec-shaped failure
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["errors"][0]["code"] == 10001
    assert schema_errors(body, SCHEMAS["workers-kv_api-response-common-failure"]) == []


def test_fault_probability_is_seeded() -> None:
    # GIVEN two emulators with the same seed and a 50 % fault each
    patterns = []
    for _ in range(2):
        with KVEmulator(tokens=[TOKEN], seed=7) as emulator:
            namespace = emulator.create_namespace("p")
            emulator.add_fault(status=500, times=-1, probability=0.5)
            # WHEN 30 requests are made
            with requests.Session() as session:
                session.headers["Authorization"] = f"Bearer {TOKEN}"
                url = f"{ns_url(emulator, namespace)}/keys"
                patterns.append([session.get(url).status_code for _ in range(30)])
    # THEN some but not all fail, identically for the same seed
    assert patterns[0] == patterns[1]
    assert 0 < patterns[0].count(500) < 30


def test_fault_probability_with_times(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a certain fault limited to 2 applications and an impossible one
    emu.add_fault(status=418, probability=0.0, times=-1)
    emu.add_fault(status=500, probability=1.0, times=2)
    # WHEN four requests are made
    statuses = [api.get(f"{ns_url(emu, ns)}/keys").status_code for _ in range(4)]
    # THEN only the certain fault applies, twice
    assert statuses == [500, 500, 200, 200]


@pytest.mark.parametrize("options", [{"times": 0}, {"times": -2}, {"probability": 1.5}])
def test_fault_options_are_validated(emu: KVEmulator, options: dict[str, Any]) -> None:
    # WHEN a fault is added with an impossible option
    # THEN it is refused
    with pytest.raises(ValueError):
        emu.add_fault(status=500, **options)


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_headers_count_down_to_429(
    emu: KVEmulator, ns: str, api: requests.Session, clock: FakeClock
) -> None:
    # GIVEN a limit of 3 requests per 60 s
    emu.put(ns, "k", "v")
    emu.rate_limit = (3, 60.0)
    # WHEN a success, an error, a second success 10 s later and a fourth request are made
    first = api.get(value_url(emu, ns, "k"))
    missing = api.get(value_url(emu, ns, "missing"))
    clock.now += 10
    third = api.get(f"{ns_url(emu, ns)}/keys")
    limited = api.get(value_url(emu, ns, "k"))
    responses = [first, missing, third, limited]
    # THEN every answer carries both headers in Cloudflare's documented format
    assert [r.status_code for r in responses] == [200, 404, 200, 429]
    for response in responses:
        assert RATELIMIT.fullmatch(response.headers["Ratelimit"]), response.headers
        assert response.headers["Ratelimit-Policy"] == '"default";q=3;w=60'
        assert RATELIMIT_POLICY.fullmatch(response.headers["Ratelimit-Policy"])
    # AND the remaining quota counts down; reset is when the oldest request leaves the window
    assert [r.headers["Ratelimit"] for r in responses] == [
        '"default";r=2;t=60',
        '"default";r=1;t=60',
        '"default";r=0;t=50',
        '"default";r=0;t=50',
    ]
    # AND the 429 is a failure envelope with Retry-After equal to the reset
    assert (limited.status_code, error_code(limited)) == (429, 10429)
    assert limited.headers["Retry-After"] == "50"
    assert "Retry-After" not in third.headers


def test_rate_limit_window_frees_requests_as_it_slides(
    emu: KVEmulator, ns: str, api: requests.Session, clock: FakeClock
) -> None:
    # GIVEN a limit of 2 requests per 30 s that is used up
    emu.rate_limit = (2, 30.0)
    url = f"{ns_url(emu, ns)}/keys"
    api.get(url)
    clock.now += 5
    api.get(url)
    assert api.get(url).status_code == 429
    # WHEN the first request leaves the window, then the second
    clock.now += 25
    freed_one = api.get(url)
    clock.now += 5.5
    freed_two = api.get(url)
    # THEN one request is allowed each time, and the headers say so (rounded up)
    assert freed_one.status_code == 200
    assert freed_one.headers["Ratelimit"] == '"default";r=0;t=5'
    assert freed_two.status_code == 200
    assert freed_two.headers["Ratelimit"] == '"default";r=0;t=25'


def test_rate_limit_setting_and_fractional_window(
    emu: KVEmulator, ns: str, api: requests.Session, clock: FakeClock
) -> None:
    # GIVEN no rate limit
    url = f"{ns_url(emu, ns)}/keys"
    unlimited = api.get(url)
    # WHEN a limit with a fractional window is set, used up, and set again
    emu.rate_limit = (1, 2.5)
    limited = [api.get(url), api.get(url)]
    emu.rate_limit = (1, 2.5)
    reset_by_setting = api.get(url)
    # THEN without a limit there are no rate headers; the window is rounded up in seconds
    assert "Ratelimit" not in unlimited.headers
    assert "Ratelimit-Policy" not in unlimited.headers
    assert [r.status_code for r in limited] == [200, 429]
    assert limited[1].headers["Ratelimit-Policy"] == '"default";q=1;w=3'
    assert limited[1].headers["Retry-After"] == "3"
    # AND setting the limit starts a new window
    assert reset_by_setting.status_code == 200
    with pytest.raises(ValueError):
        emu.rate_limit = (0, 60.0)
    emu.rate_limit = None
    assert "Ratelimit" not in api.get(url).headers


def test_rate_limit_ignores_faulted_answers(
    emu: KVEmulator, ns: str, api: requests.Session, clock: FakeClock
) -> None:
    # GIVEN a limit of 1 request per minute and an injected 503 first
    emu.rate_limit = (1, 60.0)
    emu.add_fault(status=503)
    url = f"{ns_url(emu, ns)}/keys"
    # WHEN two requests are made
    faulted, counted = api.get(url), api.get(url)
    # THEN the fault is sent as injected (no rate headers) and does not use the quota
    assert faulted.status_code == 503
    assert "Ratelimit" not in faulted.headers
    assert counted.status_code == 200
    assert counted.headers["Ratelimit"] == '"default";r=0;t=60'


# --------------------------------------------------------------------------- connections


def test_connections_opened_counts_pooled_and_separate(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a key and clean stats
    emu.put(ns, "k", "v")
    emu.reset_stats()
    # WHEN five requests share one session
    for _ in range(5):
        assert api.get(value_url(emu, ns, "k")).status_code == 200
    # THEN one connection was opened
    assert emu.connections_opened == 1
    assert len(emu.requests) == 5
    # WHEN three requests use separate connections
    emu.reset_stats()
    for _ in range(3):
        requests.get(value_url(emu, ns, "k"), headers={"Authorization": f"Bearer {TOKEN}"})
    # THEN three connections were opened
    assert emu.connections_opened == 3
    assert [r.route for r in emu.requests] == [VALUES_TEMPLATE] * 3


def test_stop_closes_pooled_connections_and_restart_keeps_state(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a warm pooled connection
    emu.put(ns, "k", "v")
    port = emu.port
    assert api.get(value_url(emu, ns, "k")).status_code == 200
    # WHEN the emulator stops
    emu.stop()
    # THEN the pooled connection is dead; after a restart on the same port the state is back
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get(value_url(emu, ns, "k"), timeout=2)
    emu.start()
    assert emu.port == port
    assert api.get(value_url(emu, ns, "k")).content == b"v"


def test_base_url_needs_a_port() -> None:
    # GIVEN an emulator that was never started on an ephemeral port
    emulator = KVEmulator()
    # THEN it has no base URL yet
    with pytest.raises(RuntimeError):
        _ = emulator.base_url


def test_cli_prints_endpoint_and_serves_with_switches() -> None:
    # GIVEN the emulator started from the command line with an empty first page and a limit
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "local.kv_emulator", "--port", "0", "--token", "T"]
    command += ["--list-empty-pages-first", "1", "--rate-limit", "5", "60"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))
        # WHEN its namespace is listed with the printed values
        url = (
            f"{lines['base_url']}/accounts/{lines['account_id']}"
            f"/storage/kv/namespaces/{lines['namespace_id']}/keys"
        )
        response = requests.get(url, headers={"Authorization": "Bearer T"}, timeout=5)
        # THEN it answers an empty first page with a cursor, and the rate headers
        assert response.status_code == 200
        assert response.json()["result"] == []
        assert response.json()["result_info"]["cursor"] != ""
        assert response.headers["Ratelimit"] == '"default";r=4;t=60'
        assert response.headers["Ratelimit-Policy"] == '"default";q=5;w=60'
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
        if proc.stdout is not None:
            proc.stdout.close()
