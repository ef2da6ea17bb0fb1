"""Hostile input: malformed, oversized, tricky and junk events never reach Cloudflare or DynamoDB.

Each rejected case must get a clear 4xx (``VALIDATION_ERROR``, or ``METHOD_NOT_ALLOWED``
for a wrong method), make zero Cloudflare calls and zero DynamoDB writes, and raise
nothing. Each "contained" case is a legal but awkward key name: it must reach exactly
one Cloudflare call, the namespace's bulk get, asking for exactly that key and nothing
else, and (the key being absent) write nothing.

Every event runs in a warm container traced as in Lambda (``tests.support.traced``):
each invocation must leave one intact X-Ray trace, and nothing it lets out (reply, log
lines, metric documents, X-Ray documents) may hold the token.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from local import aws_setup
from local.kv_emulator import KVEmulator
from tests.support.function import load_event
from tests.support.stack import TOKEN
from tests.support.traced import TracedFunction


@dataclass
class Quiet:
    """A table, a secret and a KV namespace shared by the module; nothing is ever synced."""

    emulator: Any
    dynamodb: Any
    table: str
    env: dict[str, str]

    def item_count(self) -> int:
        count: int = self.dynamodb.scan(TableName=self.table, Select="COUNT")["Count"]
        return count


@pytest.fixture(scope="module")
def quiet(moto_server_url: str) -> Iterator[Quiet]:
    suffix = uuid.uuid4().hex[:8]
    table, secret = f"hostile-{suffix}", f"hostile-{suffix}"
    with KVEmulator(tokens=[TOKEN]) as emulator:
        namespace_id = emulator.create_namespace("hostile")
        dynamodb = boto3.client("dynamodb", endpoint_url=moto_server_url)
        secrets = boto3.client("secretsmanager", endpoint_url=moto_server_url)
        # the table and the secret as Terraform makes them, and the operator fills in
        aws_setup.create_table(dynamodb, table, point_in_time_recovery=False)
        aws_setup.create_secret(secrets, secret)
        aws_setup.put_credentials(
            secrets,
            {
                "api_token": TOKEN,
                "account_id": emulator.account_id,
                "kv_namespace_id": namespace_id,
                "kv_namespace": "hostile",
            },
            secret,
        )
        env = {
            "AWS_ENDPOINT_URL": moto_server_url,
            "DYNAMODB_TABLE_NAME": table,
            "SECRETS_MANAGER_SECRET_NAME": secret,
            "CLOUDFLARE_API_BASE_URL": emulator.base_url,
        }
        try:
            yield Quiet(emulator, dynamodb, table, env)
        finally:
            dynamodb.delete_table(TableName=table)
            secrets.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)


def url(
    method: str = "POST",
    body: Any = None,
    *,
    b64: bool = False,
    query: dict[str, str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """A Function URL request (payload format 2.0)."""
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["requestContext"]["http"]["method"] = method
    event["body"] = body
    event["isBase64Encoded"] = b64
    if query is not None:
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())
    event.update(overrides)
    return event


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


V = "VALIDATION_ERROR"
M = "METHOD_NOT_ALLOWED"

REJECTED = [
    # wrong types (direct invocation)
    pytest.param([{"key_name": "a"}], V, id="direct-event-is-a-list"),
    pytest.param("classic-domain", V, id="direct-event-is-a-string"),
    pytest.param(42, V, id="direct-event-is-a-number"),
    pytest.param(True, V, id="direct-event-is-a-bool"),
    pytest.param({"key_name": 123}, V, id="key-name-number"),
    pytest.param({"key_name": None}, V, id="key-name-null"),
    pytest.param({"key_name": True}, V, id="key-name-bool"),
    pytest.param({"key_name": ["a"]}, V, id="key-name-list"),
    pytest.param({"key_name": {"$ne": None}}, V, id="key-name-operator-object"),
    pytest.param({"key_name": 1.5e308}, V, id="key-name-huge-float"),
    # empty, oversized, dot names
    pytest.param({"key_name": ""}, V, id="key-name-empty"),
    pytest.param({"key_name": "."}, V, id="key-name-dot"),
    pytest.param({"key_name": ".."}, V, id="key-name-dotdot"),
    pytest.param({"key_name": "a" * 513}, V, id="key-name-513-bytes"),
    pytest.param({"key_name": "é" * 257}, V, id="key-name-514-utf8-bytes"),
    pytest.param({"key_name": "k" * 1_000_000}, V, id="key-name-1-mb"),
    # control characters and broken unicode
    pytest.param({"key_name": "a\x00b"}, V, id="key-name-nul"),
    pytest.param({"key_name": "line\nbreak"}, V, id="key-name-newline"),
    pytest.param({"key_name": "carriage\rreturn"}, V, id="key-name-cr"),
    pytest.param({"key_name": "tab\t"}, V, id="key-name-tab"),
    pytest.param({"key_name": "del\x7f"}, V, id="key-name-del"),
    pytest.param({"key_name": "c1\x85"}, V, id="key-name-c1-next-line"),
    pytest.param({"key_name": "esc\x1b[2J"}, V, id="key-name-ansi-escape"),
    pytest.param({"key_name": "\ud800"}, V, id="key-name-lone-surrogate"),
    # unknown fields, combined selectors, bad companions
    pytest.param({"key_name": "a", "extra": 1}, V, id="unknown-field"),
    pytest.param({"Key_Name": "a"}, V, id="field-name-wrong-case"),
    pytest.param({"key_name": "a", "__proto__": {"admin": True}}, V, id="proto-pollution"),
    pytest.param({"key_name": "a", "key_names": ["b"]}, V, id="two-selectors"),
    pytest.param({"key_name": "a", "cursor": "abc"}, V, id="cursor-with-key-name"),
    pytest.param({"all": True, "cursor": "not-a-cursor"}, V, id="forged-cursor"),
    pytest.param({"delete_missing": "yes"}, V, id="delete-missing-string"),
    pytest.param({"all": True, "continuation": 1}, V, id="removed-continuation-field"),
    pytest.param({"all": "true"}, V, id="all-string"),
    pytest.param({"all": False}, V, id="all-false"),
    pytest.param({"prefix": ""}, V, id="prefix-empty"),
    pytest.param({"prefix": 7}, V, id="prefix-number"),
    pytest.param({"prefix": "a\nb"}, V, id="prefix-control-char"),
    pytest.param({"key_names": []}, V, id="key-names-empty"),
    pytest.param({"key_names": "a"}, V, id="key-names-string"),
    pytest.param({"key_names": ["ok", ".."]}, V, id="key-names-with-dotdot"),
    pytest.param({"key_names": ["ok", None]}, V, id="key-names-with-null"),
    pytest.param({"key_names": ["k"] * 1001}, V, id="key-names-1001"),
    # nested junk
    pytest.param({"key_name": nested(500)}, V, id="key-name-nested-500-deep"),
    pytest.param({"requestContext": {"http": "GET"}}, V, id="half-a-url-event"),
    pytest.param({"detail-type": "Scheduled Evil", "key_name": "a"}, V, id="fake-schedule"),
    # Function URL: wrong methods
    pytest.param(url("PUT", '{"key_name": "a"}'), M, id="url-put"),
    pytest.param(url("DELETE"), M, id="url-delete"),
    pytest.param(url("PATCH", "{}"), M, id="url-patch"),
    pytest.param(url("OPTIONS"), M, id="url-options"),
    pytest.param(url("HEAD"), M, id="url-head"),
    pytest.param(url(""), M, id="url-empty-method"),
    pytest.param(url("get\r\nX-Injected: 1"), M, id="url-method-header-injection"),
    # Function URL: bodies that are not JSON objects
    pytest.param(url(body="not json"), V, id="url-body-not-json"),
    pytest.param(url(body="[1, 2]"), V, id="url-body-array"),
    pytest.param(url(body='"key"'), V, id="url-body-string"),
    pytest.param(url(body="null"), V, id="url-body-null"),
    pytest.param(url(body="{'key_name': 'a'}"), V, id="url-body-single-quotes"),
    pytest.param(url(body='{"key_name": NaN}'), V, id="url-body-nan"),
    pytest.param(url(body='{"key_name": "a", "key_name": ".."}'), V, id="url-body-duplicate-key"),
    pytest.param(url(body='{"key_name": "a\\u0000b"}'), V, id="url-body-escaped-nul"),
    pytest.param(url(body='{"key_name": "\\ud800"}'), V, id="url-body-escaped-surrogate"),
    pytest.param(url(body="[" * 100_000), V, id="url-body-100k-deep-array"),
    pytest.param(url(body='{"a":' * 50_000), V, id="url-body-50k-deep-object"),
    pytest.param(
        url(body='{"key_name": ' + "[" * 5000 + '"x"' + "]" * 5000 + "}"),
        V,
        id="url-body-nested-value",
    ),
    # Function URL: huge bodies
    pytest.param(
        url(body=json.dumps({"key_name": "a", "pad": "x" * 70_000})), V, id="url-body-over-64k"
    ),
    pytest.param(url(body="x" * 10_000_000), V, id="url-body-10-mb"),
    # Function URL: base64
    pytest.param(url(body="!!!not base64!!!", b64=True), V, id="url-bad-base64"),
    pytest.param(url(body="eyJrZXlfbmFtZSI6ICJhIn0", b64=True), V, id="url-base64-no-padding"),
    pytest.param(url(body=b64(b'{"key_name": "a"}')[:-2] + "\n==", b64=True), V, id="url-b64-nl"),
    pytest.param(url(body=b64(b"\xff\xfe\x00garbage"), b64=True), V, id="url-base64-binary"),
    pytest.param(
        url(body=b64(json.dumps({"key_name": "a", "x": "y" * 70_000}).encode()), b64=True),
        V,
        id="url-base64-over-64k",
    ),
    pytest.param(
        url(body=b64(b'{"key_name": "a", "admin": true}'), b64=True), V, id="url-b64-unknown-field"
    ),
    # Function URL: query strings
    pytest.param(url("GET", query={"key_name": ""}), V, id="url-get-empty-key"),
    pytest.param(url("GET", query={"key_name": ".."}), V, id="url-get-dotdot"),
    pytest.param(url("GET", query={"key_name": "a\nb"}), V, id="url-get-decoded-newline"),
    pytest.param(url("GET", query={"key_name": "a", "debug": "1"}), V, id="url-get-unknown-param"),
    pytest.param(url("GET", query={"key_names": "a,b"}), V, id="url-get-key-names"),
    pytest.param(url("GET", query={"all": "maybe"}), V, id="url-get-all-maybe"),
    pytest.param(url("GET", query={"prefix": "p", "all": "true"}), V, id="url-get-two-selectors"),
    # Function URL-shaped junk sent by direct invocation
    pytest.param(
        {"requestContext": {"http": {}}, "body": '{"key_name": "a"}'},
        V,
        id="url-shape-without-method",
    ),
    pytest.param(url(body={"key_name": "a"}), V, id="url-body-is-an-object"),
    pytest.param(url(body=12345), V, id="url-body-is-a-number"),
    pytest.param(url(body={"key_name": "a"}, b64=True), V, id="url-b64-body-is-an-object"),
    pytest.param(url("GET", queryStringParameters=["key_name"]), V, id="url-query-is-a-list"),
    pytest.param(url("GET", query={"key_name": 5}), V, id="url-query-value-number"),  # type: ignore[dict-item]
    pytest.param(url(method=5), M, id="url-method-number"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("event", "error"), REJECTED)
def test_rejected_before_cloudflare_and_dynamodb(
    quiet: Quiet, traced: TracedFunction, event: Any, error: str
):
    # GIVEN a quiet namespace and table
    quiet.emulator.reset_stats()

    # WHEN the function gets the event
    outcome = traced.invoke(event, env=quiet.env)

    # THEN no unhandled exception; a clear 4xx with the right type
    assert outcome.raised is None, outcome.raised
    document = outcome.document
    assert document["success"] is False
    assert document["error"]["type"] == error, document["error"]
    assert document["error"]["is_retryable"] is False
    assert 0 < len(document["error"]["message"]) <= 300
    if outcome.status is not None:
        assert outcome.status == (405 if error == M else 400)
        assert outcome.headers["content-type"] == "application/json"
        if error == M:
            assert outcome.headers["Allow"] == "GET, POST"
    # AND nothing reached Cloudflare or DynamoDB
    assert quiet.emulator.requests == []
    assert document["statistics"]["cloudflare_api_calls"] == 0
    assert document["statistics"]["dynamodb_writes"] == 0
    assert quiet.item_count() == 0
    assert outcome.failure_types() == [error]
    assert outcome.metric("SyncSucceeded") is None
    assert outcome.metric("DynamoDBWrites") in (None, 0)
    # AND the invocation was traced, and nothing it let out holds the token
    outcome.assert_traced()
    outcome.assert_no_secrets(TOKEN)


CONTAINED = [
    "../../tokens/verify",
    "a/b?c#d",
    "%2e%2e",
    "..%2F..%2Fuser%2Ftokens",
    "%00",
    "key with spaces",
    "ключ-ünïcødé-😀",
    "\u200bzero-width",
    "<script>alert(1)</script>",
    "' OR '1'='1' --",
    "${jndi:ldap://example.invalid/a}",
    "KEY#other-record",
    "a" * 512,
    "é" * 256,
]


@pytest.mark.parametrize("via", ["direct", "url-post", "url-get"])
@pytest.mark.parametrize("key", CONTAINED, ids=lambda k: repr(k)[1:40])
def test_awkward_key_reaches_only_its_own_bulk_get(
    quiet: Quiet, traced: TracedFunction, key: str, via: str
):
    # GIVEN a legal but awkward key name, absent from KV
    quiet.emulator.reset_stats()
    if via == "direct":
        event: Any = {"key_name": key}
    elif via == "url-post":
        event = url(body=json.dumps({"key_name": key}))
    else:
        event = url("GET", query={"key_name": key})

    # WHEN the function is asked for it
    outcome = traced.invoke(event, env=quiet.env)

    # THEN it is reported missing, after exactly one bulk get of exactly that key
    assert outcome.raised is None, outcome.raised
    assert outcome.document["error"]["type"] == "NOT_FOUND", outcome.document
    if via != "direct":
        assert outcome.status == 404
    [request] = quiet.emulator.requests
    assert request.method == "POST"
    assert request.path.endswith("/bulk/get") and "?" not in request.path
    assert "/tokens" not in request.path and "/user" not in request.path
    assert json.loads(request.body)["keys"] == [key]
    assert quiet.item_count() == 0
    # AND the trace finds the run by that very key name
    outcome.assert_traced()
    assert any(a.get("key_name") == key for a in outcome.annotations())
    outcome.assert_no_secrets(TOKEN)
