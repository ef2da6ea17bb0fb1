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
import signal
import subprocess
import sys
import time
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
NS_TEMPLATE = "/accounts/{account_id}/storage/kv/namespaces"
KEYS_TEMPLATE = NS_TEMPLATE + "/{namespace_id}/keys"
VALUES_TEMPLATE = NS_TEMPLATE + "/{namespace_id}/values/{key_name}"
METADATA_TEMPLATE = NS_TEMPLATE + "/{namespace_id}/metadata/{key_name}"
BULK_GET_TEMPLATE = NS_TEMPLATE + "/{namespace_id}/bulk/get"
TOKEN = "test-token"


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
    responses = operation(template, method)["responses"]
    entry = responses["200"] if status == 200 else responses["4XX"]
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


# --------------------------------------------------------------------------- spec conformance


def test_spec_copy_names_its_source() -> None:
    # GIVEN the repository copy of the spec
    source = SPEC["x-source"]
    # THEN it says which official repository and commit it was taken from
    assert source["repository"] == "cloudflare/api-schemas"
    assert len(source["commit"]) == 40
    assert SPEC["servers"][0]["url"].endswith("/client/v4")


def test_every_route_exists_in_spec_with_same_parameters() -> None:
    # GIVEN the emulator's routing table
    for route in ROUTES:
        # WHEN its template is looked up in the spec
        op = operation(route.template, route.method)
        # THEN the path and query parameters are exactly the spec's
        path_params = {p["name"] for p in op["parameters"] if p["in"] == "path"}
        query_params = {p["name"] for p in op["parameters"] if p["in"] == "query"}
        placeholders = {s[1:-1] for s in route.template.split("/") if s.startswith("{")}
        assert path_params == placeholders, route
        assert query_params == set(route.query_params), route


def test_every_spec_operation_is_implemented() -> None:
    # GIVEN every operation of the spec subset
    spec_ops = {
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    # THEN the emulator routes each of them
    assert spec_ops == {(r.method, r.template) for r in ROUTES}


def test_list_keys_parameters_are_prefix_limit_cursor() -> None:
    # GIVEN the spec's list-keys operation
    names = {p["name"] for p in operation(KEYS_TEMPLATE, "GET")["parameters"] if p["in"] == "query"}
    # THEN it and the emulator both use prefix, limit and cursor
    assert names == {"prefix", "limit", "cursor"}
    route = next(r for r in ROUTES if r.template == KEYS_TEMPLATE)
    assert set(route.query_params) == names


def test_success_envelopes_match_spec_schemas(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a namespace with a key holding metadata and an expiration
    emu.put(ns, "k1", "v1", metadata={"a": 1}, expiration=int(time.time()) + 3600)
    emu.put(ns, "k2", "v2")
    base = ns_url(emu, ns)
    accounts = f"{emu.base_url}/accounts/{emu.account_id}/storage/kv/namespaces"
    # WHEN every JSON operation is called
    calls: list[tuple[str, str, requests.Response]] = [
        (NS_TEMPLATE, "GET", api.get(accounts)),
        (NS_TEMPLATE + "/{namespace_id}", "GET", api.get(base)),
        (KEYS_TEMPLATE, "GET", api.get(f"{base}/keys")),
        (METADATA_TEMPLATE, "GET", api.get(f"{base}/metadata/k1")),
        (METADATA_TEMPLATE, "GET", api.get(f"{base}/metadata/k2")),
        # (missing keys are not asked for here: the emulator answers null for them, which the
        # spec's text-only result schema does not list; see test_bulk_get_text_json_and_metadata)
        (BULK_GET_TEMPLATE, "POST", api.post(f"{base}/bulk/get", json={"keys": ["k1", "k2"]})),
        (
            BULK_GET_TEMPLATE,
            "POST",
            api.post(f"{base}/bulk/get", json={"keys": ["k1", "k2", "zz"], "withMetadata": True}),
        ),
        (VALUES_TEMPLATE, "PUT", api.put(f"{base}/values/k3", data=b"v3")),
        (VALUES_TEMPLATE, "DELETE", api.delete(f"{base}/values/k3")),
        (
            NS_TEMPLATE + "/{namespace_id}/bulk",
            "PUT",
            api.put(f"{base}/bulk", json=[{"key": "b1", "value": "x"}]),
        ),
        (
            NS_TEMPLATE + "/{namespace_id}/bulk/delete",
            "POST",
            api.post(f"{base}/bulk/delete", json=["b1"]),
        ),
        (NS_TEMPLATE, "POST", api.post(accounts, json={"title": "second"})),
    ]
    # THEN each answers 200 with a body valid against the spec's response schema
    for template, method, response in calls:
        assert response.status_code == 200, (template, method, response.text)
        body = assert_matches_spec(response, template, method)
        assert {"success", "errors", "messages", "result"} <= body.keys()
        assert body["success"] is True
    keys_body = calls[2][2].json()
    assert set(keys_body["result_info"]) == set(
        SCHEMAS["workers-kv_cursor_result_info"]["properties"]
    )
    assert keys_body["result"][0] == {
        "name": "k1",
        "expiration": emu_expiration(emu, ns, "k1"),
        "metadata": {"a": 1},
    }
    assert keys_body["result"][1] == {"name": "k2"}
    assert calls[1][2].json()["result"]["title"] == "kv-emulator-test"


def emu_expiration(emu: KVEmulator, ns: str, key: str) -> int:
    response = requests.get(value_url(emu, ns, key), headers={"Authorization": f"Bearer {TOKEN}"})
    return int(response.headers["expiration"])


def test_failure_envelopes_match_spec_schema(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN an empty namespace
    base = ns_url(emu, ns)
    # WHEN requests fail for different reasons
    failures = [
        (METADATA_TEMPLATE, "GET", api.get(f"{base}/metadata/missing")),
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
    for bad in (low - 1, high + 1, "abc", "10.5"):
        response = api.get(url, params={"limit": bad})
        assert response.status_code == 400
        assert error_code(response) == 10010


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
    assert too_many.status_code == 400
    assert error_code(too_many) == 10024


def test_key_name_byte_limit_comes_from_spec(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN the spec's maximum key name length (bytes)
    max_bytes = SCHEMAS["workers-kv_key_name"]["maxLength"]
    assert max_bytes == 512
    longest = "é" * (max_bytes // 2)  # 2 bytes each: exactly at the limit
    too_long = longest + "a"
    # WHEN writing and reading keys at and beyond the limit
    assert api.put(value_url(emu, ns, longest), data=b"x").status_code == 200
    put_long = api.put(value_url(emu, ns, too_long), data=b"x")
    get_long = api.get(value_url(emu, ns, too_long))
    bulk_long = api.post(f"{ns_url(emu, ns)}/bulk/get", json={"keys": [too_long]})
    # THEN the limit is accepted and one byte more is a 400 everywhere
    assert api.get(value_url(emu, ns, longest)).content == b"x"
    for response in (put_long, get_long, bulk_long):
        assert response.status_code == 400
        assert error_code(response) == 10016
    with pytest.raises(ValueError, match="512"):
        emu.put(ns, too_long, "x")


def test_value_and_metadata_size_limits(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN the spec's 25 MiB value limit and Cloudflare's 1024-byte metadata limit
    max_value = SCHEMAS["workers-kv_bulk_write"]["items"]["properties"]["value"]["maxLength"]
    assert max_value == 25 * 1024 * 1024
    # WHEN writing one byte more than allowed, and oversized metadata
    big = api.put(value_url(emu, ns, "big"), data=b"\0" * (max_value + 1))
    meta = api.put(
        value_url(emu, ns, "meta"),
        files={"value": (None, b"v"), "metadata": (None, json.dumps({"m": "x" * 1100}).encode())},
    )
    # THEN the value is refused with 413 and the metadata with 400
    assert big.status_code == 413
    assert error_code(big) == 10011
    assert meta.status_code == 400
    assert error_code(meta) == 10022
    assert emu.get(ns, "big") is None
    with pytest.raises(ValueError, match="1024"):
        emu.put(ns, "meta", "v", metadata={"m": "x" * 1100})


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
    # GIVEN a key that expires in an hour
    expiration = int(time.time()) + 3600
    emu.put(ns, "exp", "v", expiration=expiration)
    # WHEN it is read
    response = api.get(value_url(emu, ns, "exp"))
    # THEN the expiration header carries the epoch seconds
    assert response.headers["expiration"] == str(expiration)


def test_missing_key_and_namespace_are_404(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # WHEN reading a missing key, its metadata, and a key of an unknown namespace
    value = api.get(value_url(emu, ns, "nope"))
    metadata = api.get(f"{ns_url(emu, ns)}/metadata/nope")
    unknown_ns = api.get(value_url(emu, "0" * 32, "k"))
    # THEN all are 404 failure envelopes with the documented codes
    assert (value.status_code, error_code(value)) == (404, 10009)
    assert value.json()["errors"][0]["message"] == "get: 'key not found'"
    assert (metadata.status_code, error_code(metadata)) == (404, 10009)
    assert (unknown_ns.status_code, error_code(unknown_ns)) == (404, 10013)


def test_expired_key_behaves_as_missing(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a key whose expiration has passed and a live one
    emu.put(ns, "old", "v", expiration=int(time.time()) - 1)
    emu.put(ns, "live", "v")
    # WHEN it is read, listed and bulk read
    value = api.get(value_url(emu, ns, "old"))
    listed = api.get(f"{ns_url(emu, ns)}/keys").json()["result"]
    bulk = api.post(f"{ns_url(emu, ns)}/bulk/get", json={"keys": ["old"]}).json()
    # THEN it is absent everywhere
    assert value.status_code == 404
    assert [k["name"] for k in listed] == ["live"]
    assert bulk["result"]["values"] == {"old": None}
    assert emu.get(ns, "old") is None


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


@pytest.mark.parametrize("key", ["a/b?c#d", "../../tokens/verify", "%2F", "sp ace+plus:!"])
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
    # THEN the raw slash does not match the route, the others name different keys
    assert raw_slash[0] == 404
    assert json.loads(raw_slash[1])["errors"][0]["code"] == 7003
    assert dots[0] == 404
    assert json.loads(dots[1])["errors"][0]["code"] == 7003
    assert half_encoded[0] == 404  # key "a/b" (the query string is not part of the name)
    assert json.loads(half_encoded[1])["errors"][0]["code"] == 10009
    assert once_decoded[0] == 404  # decoded exactly once: key "/" not "%2F"
    assert raw_get(emu, f"{prefix}/values/%252F") == (200, b"secret")


# --------------------------------------------------------------------------- bulk get


def test_bulk_get_text_json_and_metadata(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN text and JSON values, one with metadata and expiration
    expiration = int(time.time()) + 600
    emu.put(ns, "t", "plain text", metadata={"m": 1}, expiration=expiration)
    emu.put(ns, "j", json.dumps({"x": [1, 2]}))
    url = f"{ns_url(emu, ns)}/bulk/get"
    # WHEN bulk reading as text, as json, and with metadata
    text = api.post(url, json={"keys": ["t", "j", "missing"]}).json()["result"]
    as_json = api.post(url, json={"keys": ["j"], "type": "json"}).json()["result"]
    with_meta = api.post(url, json={"keys": ["t", "j", "missing"], "withMetadata": True}).json()[
        "result"
    ]
    # THEN values are returned (missing ones as null); expiration only when set
    assert text == {"values": {"t": "plain text", "j": '{"x": [1, 2]}', "missing": None}}
    assert as_json == {"values": {"j": {"x": [1, 2]}}}
    assert with_meta == {
        "values": {
            "t": {"value": "plain text", "metadata": {"m": 1}, "expiration": expiration},
            "j": {"value": '{"x": [1, 2]}', "metadata": None},
            "missing": None,
        }
    }


def test_bulk_get_rejects_non_json_and_non_utf8(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a text value that is not JSON and a binary value that is not UTF-8
    emu.put(ns, "text", "not json")
    emu.put(ns, "bin", b"\xff\xfe\x00")
    url = f"{ns_url(emu, ns)}/bulk/get"
    # WHEN they are bulk read
    not_json = api.post(url, json={"keys": ["text"], "type": "json"})
    not_utf8 = api.post(url, json={"keys": ["text", "bin"]})
    bad_type = api.post(url, json={"keys": ["text"], "type": "arrayBuffer"})
    # THEN each is a 400 failure envelope; the UTF-8 one says so
    assert (not_json.status_code, error_code(not_json)) == (400, 10026)
    assert (not_utf8.status_code, error_code(not_utf8)) == (400, 10025)
    assert "UTF-8" in not_utf8.json()["errors"][0]["message"]
    assert (bad_type.status_code, error_code(bad_type)) == (400, 10012)


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
    url = f"{ns_url(emu, ns)}/keys"
    # WHEN listing the prefix page by page with limit 10
    pages: list[list[str]] = []
    cursors: list[str] = []
    cursor = ""
    while True:
        params = {"prefix": "p/", "limit": "10"} | ({"cursor": cursor} if cursor else {})
        body = api.get(url, params=params).json()
        pages.append([k["name"] for k in body["result"]])
        assert body["result_info"]["count"] == len(body["result"])
        cursor = body["result_info"]["cursor"]
        cursors.append(cursor)
        if not cursor:
            break
    # THEN pages of 10, 10, 10, 5 cover exactly the prefix in order; the last cursor is ""
    assert [len(p) for p in pages] == [10, 10, 10, 5]
    assert [name for page in pages for name in page] == wanted
    assert cursors[-1] == ""
    assert all(c and c not in wanted for c in cursors[:-1])  # opaque, not the key name


def test_list_keys_sorted_by_utf8_bytes(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN keys mixing case, accents, and characters beyond the BMP
    names = ["b", "B", "a", "é", "\uffff", "\U0001f600", "a0", "~"]
    for name in names:
        emu.put(ns, name, "v")
    # WHEN listing
    listed = [k["name"] for k in api.get(f"{ns_url(emu, ns)}/keys").json()["result"]]
    # THEN the order is the UTF-8 byte order
    assert listed == sorted(names, key=lambda n: n.encode("utf-8"))
    assert emu.keys(ns) == listed


def test_list_keys_rejects_garbage_cursor(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # WHEN listing with a cursor that the emulator never issued
    response = api.get(f"{ns_url(emu, ns)}/keys", params={"cursor": "!!!not-base64"})
    # THEN it is a 400
    assert (response.status_code, error_code(response)) == (400, 10010)


# --------------------------------------------------------------------------- writes


def test_put_raw_multipart_and_expiration_rules(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN an empty namespace
    now = int(time.time())
    # WHEN writing raw bytes, multipart with metadata, and with ttl / expiration
    raw = api.put(value_url(emu, ns, "raw"), data=b"\x00raw\r\n")
    multi = api.put(
        value_url(emu, ns, "multi"),
        files={"value": (None, b"\r\nmulti\r\n"), "metadata": (None, b'{"k": "v"}')},
    )
    ttl = api.put(value_url(emu, ns, "ttl"), data=b"t", params={"expiration_ttl": 120})
    short_ttl = api.put(value_url(emu, ns, "short"), data=b"t", params={"expiration_ttl": 59})
    past = api.put(value_url(emu, ns, "past"), data=b"t", params={"expiration": now})
    # THEN values are stored byte-exactly, and the spec's ttl minimum of 60 is enforced
    assert [r.status_code for r in (raw, multi, ttl)] == [200, 200, 200]
    assert emu.get(ns, "raw") == b"\x00raw\r\n"
    assert emu.get(ns, "multi") == b"\r\nmulti\r\n"
    assert api.get(f"{ns_url(emu, ns)}/metadata/multi").json()["result"] == {"k": "v"}
    assert SCHEMAS["workers-kv_expiration_ttl"]["minimum"] == 60
    header = int(api.get(value_url(emu, ns, "ttl")).headers["expiration"])
    assert now + 119 <= header <= now + 122
    assert (short_ttl.status_code, error_code(short_ttl)) == (400, 10021)
    assert (past.status_code, error_code(past)) == (400, 10021)


def test_bulk_write_and_delete(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a bulk write with base64, metadata and ttl
    payload = [
        {"key": "plain", "value": "hello"},
        {"key": "b64", "value": base64.b64encode(b"\xff\x00").decode(), "base64": True},
        {"key": "meta", "value": "m", "metadata": {"x": 1}, "expiration_ttl": 300},
    ]
    # WHEN it is written, then keys are removed with both delete operations
    written = api.put(f"{ns_url(emu, ns)}/bulk", json=payload).json()
    # THEN all are stored
    assert written["result"] == {"successful_key_count": 3, "unsuccessful_keys": []}
    assert emu.get(ns, "b64") == b"\xff\x00"
    assert api.get(f"{ns_url(emu, ns)}/metadata/meta").json()["result"] == {"x": 1}
    deleted = api.post(f"{ns_url(emu, ns)}/bulk/delete", json=["plain", "absent"]).json()
    assert deleted["result"]["successful_key_count"] == 2
    assert api.delete(f"{ns_url(emu, ns)}/bulk", json=["b64"]).status_code == 200
    assert api.delete(value_url(emu, ns, "meta")).status_code == 200
    assert emu.keys(ns) == []


def test_namespaces_create_get_list(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN one namespace
    accounts = f"{emu.base_url}/accounts/{emu.account_id}/storage/kv/namespaces"
    # WHEN creating another over HTTP, a duplicate title, and listing
    created = api.post(accounts, json={"title": "other"})
    duplicate = api.post(accounts, json={"title": "other"})
    listed = api.get(accounts, params={"order": "title"}).json()
    # THEN ids are 32 hex chars, titles are unique and the list shows both
    new_id = created.json()["result"]["id"]
    assert len(new_id) == 32
    int(new_id, 16)
    assert (duplicate.status_code, error_code(duplicate)) == (400, 10014)
    assert [n["title"] for n in listed["result"]] == ["kv-emulator-test", "other"]
    assert listed["result_info"]["total_count"] == 2
    assert api.get(ns_url(emu, ns)).json()["result"]["title"] == "kv-emulator-test"


def test_unknown_routes_and_methods(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # WHEN calling a path outside the spec and a wrong method on a known path
    no_route = api.get(f"{ns_url(emu, ns)}/nothing")
    wrong_method = api.post(value_url(emu, ns, "k"), data=b"x")
    # THEN 404 / 7003 and 405 / 7001
    assert (no_route.status_code, error_code(no_route)) == (404, 7003)
    assert (wrong_method.status_code, error_code(wrong_method)) == (405, 7001)


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
    # GIVEN two 503 faults on list-keys GETs only
    emu.put(ns, "k", "v")
    emu.add_fault(status=503, times=2, path_contains="/keys", method="GET")
    # WHEN values and keys are requested
    value = api.get(value_url(emu, ns, "k"))
    keys = [api.get(f"{ns_url(emu, ns)}/keys").status_code for _ in range(3)]
    # THEN only the first two list requests fail
    assert value.status_code == 200
    assert keys == [503, 503, 200]


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
    emu.add_fault(delay=0.4)
    emu.add_fault(delay=0.15)
    # WHEN a client with a short read timeout reads, then one without
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.get(value_url(emu, ns, "k"), timeout=0.1)
    started = time.monotonic()
    response = api.get(value_url(emu, ns, "k"), timeout=5)
    # THEN the first times out, the second is answered normally after the delay
    assert response.content == b"v"
    assert time.monotonic() - started >= 0.15


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
    # THEN requests reports a broken body
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
    assert schema_errors(body, SCHEMAS["workers-kv_api-response-common-failure"]) == []


def test_fault_probability_is_seeded(ns: str) -> None:
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


def test_rate_limit(emu: KVEmulator, ns: str, api: requests.Session) -> None:
    # GIVEN a limit of 3 requests per 60 s
    emu.rate_limit = (3, 60.0)
    url = f"{ns_url(emu, ns)}/keys"
    # WHEN four requests are made
    statuses = [api.get(url).status_code for _ in range(3)]
    limited = api.get(url)
    # THEN the fourth is a 429 with Retry-After and a 10000-range code
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert error_code(limited) == 10429
    emu.rate_limit = None
    assert api.get(url).status_code == 200


def test_stop_closes_pooled_connections_and_restart_keeps_state(
    emu: KVEmulator, ns: str, api: requests.Session
) -> None:
    # GIVEN a warm pooled connection
    emu.put(ns, "k", "v")
    assert api.get(value_url(emu, ns, "k")).status_code == 200
    # WHEN the emulator stops
    emu.stop()
    # THEN the pooled connection is dead; after a restart on the same port the state is back
    with pytest.raises(requests.exceptions.ConnectionError):
        api.get(value_url(emu, ns, "k"), timeout=2)
    emu.start()
    assert api.get(value_url(emu, ns, "k")).content == b"v"


def test_cli_prints_endpoint_and_serves() -> None:
    # GIVEN the emulator started from the command line on a free port
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.kv_emulator", "--port", "0", "--token", "T"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(3))
        # WHEN its namespace is read with the printed values
        url = (
            f"{lines['base_url']}/accounts/{lines['account_id']}"
            f"/storage/kv/namespaces/{lines['namespace_id']}"
        )
        response = requests.get(url, headers={"Authorization": "Bearer T"}, timeout=5)
        # THEN it answers with the default title
        assert response.json()["result"]["title"] == "demo"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
        if proc.stdout is not None:
            proc.stdout.close()
