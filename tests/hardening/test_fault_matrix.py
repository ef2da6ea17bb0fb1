"""Fault matrix: Cloudflare, DynamoDB and Secrets Manager failures, end to end.

Every case runs the real handler, traced as in Lambda, in a warm container of its own
(``tests.support.traced``), over real sockets (KV emulator, moto server, and for
faults moto cannot produce, the AWS fault proxy), through the Function URL path, and
checks the same things:

- the error type and ``is_retryable`` in the reply, and the HTTP status;
- the wall time: never past the Lambda deadline, and at least any wait Cloudflare
  asked for;
- the metrics: ``SyncFailed`` with the right ``ErrorType`` (or ``SyncSucceeded``), and
  ``CloudflareApiCalls``/``CloudflareRetries``/``DynamoDBWrites`` matching the reply;
- DynamoDB holds the old record untouched, or the complete new one, never a mix;
- the X-Ray trace: one intact tree under the invocation's trace, findable by its
  ``key_name`` annotation;
- nothing the function let out (log lines, metric documents, the reply, X-Ray
  documents with their recorded exceptions) holds the token or the secret.

The setup of each case: the key was synced once (old value), then changed in KV (new
value), so a failed sync must leave the old record exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.aws_fault_proxy import AwsFaultProxy
from tests.support.function import load_event
from tests.support.iam import WRITE_OPERATIONS, granted_dynamodb_operations
from tests.support.stack import TOKEN, Stack
from tests.support.traced import Outcome, TracedFunction

KEY = "flag"
OLD = '{"enabled": false, "rev": 1}'
NEW = '{"enabled": true, "rev": 2}'
REQUIRED_ATTRIBUTES = {
    "pk",
    "sk",
    "key",
    "value",
    "value_type",
    "namespace_id",
    "namespace_name",
    "value_sha256",
    "size_bytes",
    "content_sha256",
    "created_at",
    "updated_at",
    "synced_at",
}


def url_event(key: str = KEY) -> dict[str, Any]:
    """A Function URL POST asking for ``key``."""
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps({"key_name": key})
    return event


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Baseline:
    """The stack after the key was synced with OLD and KV then changed to NEW."""

    stack: Stack
    function: TracedFunction
    old: dict[str, Any]
    secret_string: str
    env: dict[str, str]

    def secrets(self) -> tuple[str, ...]:
        return (TOKEN, self.secret_string)

    def invoke(
        self, event: Any = None, *, env: dict[str, str] | None = None, **options: Any
    ) -> Outcome:
        """Invoke the warm container with the stack's environment (plus ``env``)."""
        return self.function.invoke(
            url_event() if event is None else event, env={**self.env, **(env or {})}, **options
        )


@pytest.fixture
def baseline(stack: Stack, traced: TracedFunction) -> Baseline:
    ns = stack.namespace_id
    stack.emulator.put(ns, KEY, OLD, metadata={"owner": "ops"})
    first = traced.invoke({"key_name": KEY}, env=stack.env())
    assert first.document["success"] is True, (first.document, first.output[-2000:])
    stack.emulator.put(ns, KEY, NEW, metadata={"owner": "ops", "rev": 2})
    old = stack.item(KEY)
    assert old is not None and old["value"] == OLD
    stack.emulator.reset_stats()
    return Baseline(stack, traced, old, stack.secret_string(), stack.env())


@dataclass(frozen=True)
class Case:
    """One fault and what the function must make of it (``error=None``: it recovers).

    ``arrange`` sets the fault up and returns variables to change in the function's
    environment; ``min_s`` is a wait the function must make (a ``Retry-After``, a
    read timeout).
    """

    id: str
    arrange: Callable[[Stack], dict[str, str]]
    error: str | None
    retryable: bool | None
    status: int
    calls: int | None = None
    min_s: float = 0.0
    timeout_ms: int = 30_000
    retry_after: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def fault(**kwargs: Any) -> Callable[[Stack], dict[str, str]]:
    """Arrange an emulator fault on the bulk-get call the single-key sync makes."""

    def arrange(stack: Stack) -> dict[str, str]:
        stack.emulator.add_fault(path_contains="/bulk/get", **kwargs)
        return {}

    return arrange


def refused(stack: Stack) -> dict[str, str]:
    return {"CLOUDFLARE_API_BASE_URL": f"http://127.0.0.1:{closed_port()}/client/v4"}


def key_gone(stack: Stack) -> dict[str, str]:
    stack.emulator.delete(stack.namespace_id, KEY)
    return {}


def nothing(stack: Stack) -> dict[str, str]:
    return {}


CLOUDFLARE_CASES = [
    Case("429-retry-after-once", fault(status=429, retry_after="1"), None, None, 200, 2, 1.0),
    Case(
        "429-retry-after-always",
        fault(status=429, retry_after="1", times=-1),
        "RATE_LIMITED",
        True,
        503,
        2,
        1.0,
        retry_after="1",
        env={"RETRY_MAX_ATTEMPTS": "2"},
    ),
    Case(
        "429-retry-after-beyond-cap",
        fault(status=429, retry_after="120", times=-1),
        "RATE_LIMITED",
        True,
        503,
        1,
        retry_after="120",
    ),
    Case("429-no-retry-after-once", fault(status=429), None, None, 200, 2),
    Case(
        "429-no-retry-after-always",
        fault(status=429, times=-1),
        "RATE_LIMITED",
        True,
        503,
        3,
        retry_after="1",
    ),
    *[
        Case(
            f"{status}-burst-shorter-than-budget", fault(status=status, times=2), None, None, 200, 3
        )
        for status in (500, 502, 503, 504)
    ],
    *[
        Case(
            f"{status}-burst-longer-than-budget",
            fault(status=status, times=3),
            "API_ERROR",
            True,
            502,
            3,
        )
        for status in (500, 502, 503, 504)
    ],
    Case(
        "slower-than-read-timeout-once",
        fault(delay=1.2),
        None,
        None,
        200,
        2,
        min_s=0.75,
        env={"API_TIMEOUT_SECONDS": "1"},
    ),
    Case(
        "slower-than-read-timeout-always",
        fault(delay=1.2, times=-1),
        "TIMEOUT",
        True,
        504,
        2,
        min_s=1.4,
        env={"API_TIMEOUT_SECONDS": "1", "RETRY_MAX_ATTEMPTS": "2"},
    ),
    Case(
        "slower-than-the-deadline",
        fault(delay=5.0, times=-1),
        "TIMEOUT",
        True,
        504,
        None,
        timeout_ms=1_500,
    ),
    Case("connection-refused", refused, "NETWORK_ERROR", True, 502, 3),
    Case("connection-dropped-once", fault(drop_connection=True), None, None, 200, 2),
    Case(
        "connection-dropped-always",
        fault(drop_connection=True, times=-1),
        "NETWORK_ERROR",
        True,
        502,
        3,
    ),
    Case("reset-mid-body-once", fault(reset_mid_body=True), None, None, 200, 2),
    Case(
        "reset-mid-body-always",
        fault(reset_mid_body=True, times=-1),
        "NETWORK_ERROR",
        True,
        502,
        3,
    ),
    Case("truncated-body-once", fault(truncate_body=True), None, None, 200, 2),
    Case(
        "truncated-body-always",
        fault(truncate_body=True, times=-1),
        "NETWORK_ERROR",
        True,
        502,
        3,
    ),
    Case(
        "html-error-page-502",
        fault(html_body=True, status=502, times=-1),
        "API_ERROR",
        True,
        502,
        3,
    ),
    # a 2xx whose body is not JSON (a proxy's page): retried like a 5xx, then reported
    Case(
        "html-page-with-200",
        fault(html_body=True, status=200, times=-1),
        "API_ERROR",
        True,
        502,
        3,
    ),
    Case("html-page-with-200-once", fault(html_body=True, status=200, times=1), None, None, 200, 2),
    Case(
        "success-false-envelope", fault(envelope_failure=True, times=-1), "API_ERROR", False, 502, 1
    ),
    Case("401-once-then-token-reread", fault(status=401), None, None, 200, 2),
    Case("401-always", fault(status=401, times=-1), "AUTH_ERROR", False, 502, 2),
    Case("403-always", fault(status=403, times=-1), "AUTH_ERROR", False, 502, 2),
    Case("404-key-missing", key_gone, "NOT_FOUND", False, 404, 1),
    Case(
        "404-namespace-unknown",
        fault(status=404, times=-1),
        "CONFIGURATION_ERROR",
        False,
        500,
        1,
    ),
]


def check(base: Baseline, case: Case, outcome: Outcome, *, new_record: bool | None = None) -> None:
    """The assertions every case shares."""
    # no unhandled exception, and the Function URL reply is well formed
    assert outcome.raised is None, outcome.raised
    doc = outcome.document
    assert outcome.headers.get("content-type") == "application/json"
    assert outcome.status == case.status, doc
    if case.error is None:
        assert doc["success"] is True, doc
    else:
        assert doc["success"] is False
        assert doc["error"]["type"] == case.error, doc["error"]
        assert doc["error"]["is_retryable"] is case.retryable, doc["error"]
    if case.retry_after is not None:
        assert outcome.headers.get("Retry-After") == case.retry_after
    stats = doc["statistics"]
    if case.calls is not None:
        assert stats["cloudflare_api_calls"] == case.calls, stats

    # answered before the Lambda deadline, after any wait it had to make
    assert case.min_s <= outcome.elapsed < case.timeout_ms / 1000, outcome.elapsed

    # metrics: one failure with its type, or one success; counters match the reply
    if case.error is None:
        assert outcome.failure_types() == []
        assert outcome.metric("SyncSucceeded") == 1
    else:
        assert outcome.failure_types() == [case.error]
        assert outcome.metric("SyncSucceeded") is None
    assert outcome.metric("CloudflareApiCalls") == stats["cloudflare_api_calls"]
    assert outcome.counted("CloudflareRetries") == stats["cloudflare_retries"]
    assert outcome.counted("DynamoDBWrites") == stats["dynamodb_writes"]

    # DynamoDB: the old record untouched, or the whole new one
    expect_new = (case.error is None) if new_record is None else new_record
    assert_old_or_new(base, expect_new)

    # traced as X-Ray sees it, findable by the key; and secret hygiene over everything
    outcome.assert_traced()
    assert any(a.get("key_name") == KEY for a in outcome.annotations()), outcome.annotations()
    outcome.assert_no_secrets(*base.secrets())


def assert_old_or_new(base: Baseline, expect_new: bool) -> None:
    item = base.stack.item(KEY)
    assert item is not None
    if not expect_new:
        assert item == base.old
        return
    assert set(item) >= REQUIRED_ATTRIBUTES, set(item)
    assert item["value"] == NEW
    assert item["metadata"] == {"owner": "ops", "rev": 2}
    assert item["value_sha256"] == hashlib.sha256(NEW.encode()).hexdigest()
    assert item["size_bytes"] == len(NEW.encode())
    assert item["created_at"] == base.old["created_at"]
    assert item["updated_at"] == item["synced_at"] > base.old["synced_at"]


@pytest.mark.parametrize("case", CLOUDFLARE_CASES, ids=lambda c: c.id)
def test_cloudflare_fault(baseline: Baseline, case: Case):
    # GIVEN the fault
    env = {**case.env, **case.arrange(baseline.stack)}

    # WHEN the key is synced through the Function URL
    outcome = baseline.invoke(env=env, timeout_ms=case.timeout_ms)

    # THEN the reply, metrics, table, trace and hygiene are as the case says
    check(baseline, case, outcome)
    baseline.stack.emulator.clear_faults()


# --------------------------------------------------------------------------- DynamoDB


@pytest.fixture
def proxied(aws_proxy: AwsFaultProxy, baseline: Baseline) -> AwsFaultProxy:
    """The baseline's function, from now on calling AWS through the fault proxy."""
    baseline.env["AWS_ENDPOINT_URL"] = aws_proxy.url
    aws_proxy.calls.clear()
    return aws_proxy


def unprocessed(request: dict[str, Any]) -> dict[str, Any]:
    """A BatchGetItem reply that processed none of the keys asked for (throttling)."""
    items = request["RequestItems"]
    return {"Responses": {table: [] for table in items}, "UnprocessedKeys": items}


@dataclass(frozen=True)
class AwsCase:
    """Faults on AWS operations, given to the proxy (``add_fault`` keywords each).

    ``operations``: the operations faulted (each gets every fault); ``statuses``: what
    the proxy answered to them, in order.
    """

    id: str
    operations: tuple[str, ...]
    faults: tuple[dict[str, Any], ...]
    case: Case
    statuses: tuple[int, ...] | None = None


def aws_fault(code: str | None, times: int = -1, **options: Any) -> dict[str, Any]:
    return {"code": code, "times": times, **options}


THROTTLED = "ProvisionedThroughputExceededException"
# The conditional write of a new or changed record, whichever of the two it uses.
WRITE = WRITE_OPERATIONS
READ = ("BatchGetItem",)
# botocore's standard mode, max_attempts=5 (kv_sync.runtime): the first call and 5 retries.
DYNAMODB_CASES = [
    # the write of the new record (one conditional write)
    AwsCase(
        "write-throttled-then-recovers",
        WRITE,
        (aws_fault(THROTTLED, times=2),),
        Case("", nothing, None, None, 200, 1),
        statuses=(400, 400, 200),
    ),
    AwsCase(
        "write-throttled-always",
        WRITE,
        (aws_fault(THROTTLED),),
        Case("", nothing, "STORAGE_ERROR", True, 500, 1),
        statuses=(400,) * 6,
    ),
    AwsCase(
        "write-internal-server-error-always",
        WRITE,
        (aws_fault("InternalServerError", status=500),),
        Case("", nothing, "STORAGE_ERROR", True, 500, 1),
        statuses=(500,) * 6,
    ),
    AwsCase(
        "write-conditional-check-failed",
        WRITE,
        (
            aws_fault(
                "ConditionalCheckFailedException", times=1, message="The conditional request failed"
            ),
        ),
        Case("", nothing, None, None, 200, 1),
        statuses=(400,),
    ),
    AwsCase(
        "write-item-too-large",
        WRITE,
        (
            aws_fault(
                "ValidationException",
                times=1,
                message="Item size has exceeded the maximum allowed size",
            ),
        ),
        Case("", nothing, "VALUE_TOO_LARGE", False, 422, 1),
        statuses=(400,),
    ),
    AwsCase(
        "write-table-not-found",
        WRITE,
        (aws_fault("ResourceNotFoundException", message="Requested resource not found"),),
        Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1),
        statuses=(400,),
    ),
    AwsCase(
        "write-access-denied",
        WRITE,
        (
            aws_fault(
                "AccessDeniedException",
                message="User is not authorized to perform this action on the table",
            ),
        ),
        Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1),
        statuses=(400,),
    ),
    # the read of the stored version (one BatchGetItem)
    AwsCase(
        "read-throttled-always",
        READ,
        (aws_fault(THROTTLED),),
        Case("", nothing, "STORAGE_ERROR", True, 500, 1),
        statuses=(400,) * 6,
    ),
    AwsCase(
        "read-unprocessed-once",
        READ,
        (aws_fault(None, times=1, reply=unprocessed),),
        Case("", nothing, None, None, 200, 1),
        statuses=(200, 200),
    ),
    AwsCase(
        "read-unprocessed-always",
        READ,
        (aws_fault(None, reply=unprocessed),),
        Case("", nothing, "STORAGE_ERROR", True, 500, 1),
        statuses=(200,) * 5,
    ),
    AwsCase(
        "read-table-not-found",
        READ,
        (aws_fault("ResourceNotFoundException", message="Requested resource not found"),),
        Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1),
        statuses=(400,),
    ),
    AwsCase(
        "read-access-denied",
        READ,
        (
            aws_fault(
                "AccessDeniedException",
                message="User is not authorized to perform: dynamodb:BatchGetItem",
            ),
        ),
        Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1),
        statuses=(400,),
    ),
]


@pytest.mark.parametrize("aws_case", DYNAMODB_CASES, ids=lambda c: c.id)
def test_dynamodb_fault(baseline: Baseline, proxied: AwsFaultProxy, aws_case: AwsCase):
    # GIVEN DynamoDB fails the operations as the case says
    for operation in aws_case.operations:
        for options in aws_case.faults:
            proxied.add_fault(operation, **options)

    # WHEN the key is synced
    outcome = baseline.invoke()

    # THEN the reply, metrics, table, trace and hygiene are as the case says
    superseded = "conditional-check-failed" in aws_case.id
    check(
        baseline, aws_case.case, outcome, new_record=aws_case.case.error is None and not superseded
    )
    faulted = [status for op, status in proxied.calls if op in aws_case.operations]
    assert tuple(faulted) == aws_case.statuses
    # AND the stored version was read before any write; only granted calls were made
    dynamodb = [operation for operation, _ in proxied.calls if operation != "GetSecretValue"]
    assert dynamodb[0] == "BatchGetItem", dynamodb
    assert set(dynamodb) <= granted_dynamodb_operations()
    if superseded:
        assert outcome.document["data"]["record"]["superseded"] is True
        assert outcome.document["data"]["processing_summary"]["record_stored"] is False


def test_newer_record_in_table_wins_over_this_sync(baseline: Baseline):
    """The table already holds a newer sync of the key: nothing is written."""
    # GIVEN a record stamped by a sync that read KV after this one will
    stack = baseline.stack
    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"pk": {"S": baseline.old["pk"]}, "sk": {"S": baseline.old["sk"]}},
        UpdateExpression="SET synced_at = :s",
        ExpressionAttributeValues={":s": {"S": "2999-01-01T00:00:00.000000Z"}},
    )
    before = stack.item(KEY)

    # WHEN the key is synced
    outcome = baseline.invoke()

    # THEN the result is discarded as superseded, without a write
    assert outcome.status == 200
    assert outcome.document["data"]["record"]["superseded"] is True
    assert outcome.document["data"]["processing_summary"]["record_stored"] is False
    assert outcome.document["statistics"]["dynamodb_writes"] == 0
    assert outcome.counted("DynamoDBWrites") == 0
    assert stack.item(KEY) == before
    outcome.assert_no_secrets(*baseline.secrets())


def test_missing_table_is_configuration_error(baseline: Baseline):
    # GIVEN a table name that does not exist
    # WHEN the key is synced
    outcome = baseline.invoke(env={"DYNAMODB_TABLE_NAME": "no-such-table"})

    # THEN a configuration error naming it
    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1), outcome)
    assert "no-such-table" in outcome.error["message"]


def test_value_too_large_even_compressed_writes_nothing(baseline: Baseline, proxied: AwsFaultProxy):
    # GIVEN 600 KB of random bytes: over the 400 KB item limit and incompressible
    stack = baseline.stack
    stack.emulator.put(stack.namespace_id, KEY, os.urandom(600 * 1024))

    # WHEN the key is synced
    outcome = baseline.invoke()

    # THEN bulk get refused the binary value, the raw value and its metadata were
    # read, and nothing was written
    check(baseline, Case("", nothing, "VALUE_TOO_LARGE", False, 422, 3), outcome)
    assert [op for op, _ in proxied.calls if op in WRITE] == []
    assert outcome.document["statistics"]["dynamodb_writes"] == 0


@pytest.mark.parametrize("operations", [READ, WRITE], ids=["read", "write"])
def test_hung_dynamodb_still_answers_before_the_deadline(
    baseline: Baseline, proxied: AwsFaultProxy, operations: tuple[str, ...]
):
    # GIVEN DynamoDB never answers the read of the stored version, or the write
    release = threading.Event()
    for operation in operations:
        proxied.add_fault(operation, None, times=-1, hang=release)
    try:
        # WHEN the key is synced in a 1.5 s invocation
        outcome = baseline.invoke(timeout_ms=1_500, wait_s=2.3)
        # THEN it answered before the deadline, the call still unanswered, the
        # old record in place (an abandoned write may land later: old or new, whole)
        assert_old_or_new(baseline, expect_new=False)
    finally:
        release.set()

    # AND with a retryable TIMEOUT
    assert outcome.elapsed < 1.5
    assert outcome.status == 504
    assert outcome.error["type"] == "TIMEOUT"
    assert outcome.error["is_retryable"] is True
    assert outcome.failure_types() == ["TIMEOUT"]
    outcome.assert_no_secrets(*baseline.secrets())


def test_unprocessed_keys_near_the_deadline_still_answer_before_it(
    baseline: Baseline, proxied: AwsFaultProxy
):
    # GIVEN DynamoDB leaves every key of every BatchGetItem unprocessed (throttling)
    proxied.add_fault("BatchGetItem", None, times=-1, reply=unprocessed)

    # WHEN the key is synced, five times, in 1.1 s invocations (the backoff between
    # attempts is random, so one invocation may happen to end in time)
    outcomes = [baseline.invoke(timeout_ms=1_100) for _ in range(5)]

    # THEN every one answered before Lambda's deadline, with a retryable error, and
    # the old record was kept
    assert [round(o.elapsed, 2) for o in outcomes if o.elapsed >= 1.1] == []
    for outcome in outcomes:
        assert outcome.status in (500, 504), outcome.document
        assert outcome.error["is_retryable"] is True
    assert_old_or_new(baseline, expect_new=False)


# --------------------------------------------------------------------------- Secrets Manager


def creds(**overrides: Any) -> dict[str, Any]:
    return {
        "api_token": TOKEN,
        "account_id": "acc0123456789abcdef0123456789abcd",
        "kv_namespace_id": "ns-id",
        "kv_namespace": "kv-sync-test",
        **overrides,
    }


SECRET_CONTENT_CASES = [
    pytest.param('{"api_token": "' + TOKEN + '", "account_id": ', (), id="malformed-json"),
    pytest.param(json.dumps([TOKEN]), (), id="json-but-not-an-object"),
    pytest.param(
        json.dumps({k: v for k, v in creds().items() if k not in {"api_token", "kv_namespace"}}),
        ("api_token", "kv_namespace"),
        id="missing-fields",
    ),
    pytest.param(
        json.dumps(creds(account_id="", kv_namespace_id=7)),
        ("account_id", "kv_namespace_id"),
        id="empty-and-wrong-type-fields",
    ),
    pytest.param(json.dumps(creds(api_token="changeme")), ("api_token",), id="placeholder-token"),
    pytest.param("   ", (), id="blank"),
]


@pytest.mark.parametrize(("raw", "named"), SECRET_CONTENT_CASES)
def test_bad_secret_content_is_configuration_error(
    baseline: Baseline, raw: str, named: tuple[str, ...]
):
    # GIVEN a secret whose value is unusable
    stack = baseline.stack
    stack.put_raw_secret(raw)

    # WHEN a cold container syncs the key
    outcome = baseline.invoke(reset=True)

    # THEN a configuration error naming the fields (never the values), before any call
    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 0), outcome)
    message = outcome.error["message"]
    for name in named:
        assert name in message
    assert stack.emulator.requests == []
    outcome.assert_no_secrets(*([raw] if raw.strip() else []), TOKEN)


@pytest.mark.parametrize(
    ("code", "retryable", "statuses"),
    [
        pytest.param("ResourceNotFoundException", False, (400,), id="resource-not-found"),
        pytest.param("AccessDeniedException", False, (400,), id="access-denied"),
        pytest.param("DecryptionFailure", False, (400,), id="kms-decryption-failure"),
        pytest.param("ThrottlingException", True, (400,) * 6, id="throttled"),
    ],
)
def test_secrets_manager_error_is_configuration_error(
    baseline: Baseline,
    proxied: AwsFaultProxy,
    code: str,
    retryable: bool,
    statuses: tuple[int, ...],
):
    # GIVEN Secrets Manager fails every read
    proxied.add_fault("GetSecretValue", code, times=-1)

    # WHEN a cold container syncs the key
    outcome = baseline.invoke(reset=True)

    # THEN a configuration error naming the code, retryable when it is throttling
    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", retryable, 500, 0), outcome)
    assert code in outcome.error["message"]
    assert tuple(proxied.operations("GetSecretValue")) == statuses
    assert baseline.stack.emulator.requests == []


def test_secret_that_does_not_exist(baseline: Baseline):
    # WHEN the function is configured with a secret that does not exist
    outcome = baseline.invoke(env={"SECRETS_MANAGER_SECRET_NAME": "no-such-secret"})

    # THEN a configuration error saying so
    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 0), outcome)
    assert "ResourceNotFoundException" in outcome.error["message"]


def test_secret_without_a_value(baseline: Baseline):
    # GIVEN a secret created (as Terraform does) but never given a value
    name = f"no-value-yet-{uuid.uuid4().hex[:8]}"
    baseline.stack.secrets.create_secret(Name=name)
    try:
        # WHEN the function reads it
        outcome = baseline.invoke(env={"SECRETS_MANAGER_SECRET_NAME": name})
    finally:
        baseline.stack.secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)

    # THEN a configuration error
    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 0), outcome)


def test_unreachable_secrets_manager_is_retryable(baseline: Baseline):
    # GIVEN Secrets Manager cannot be reached
    env = {"AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{closed_port()}"}

    # WHEN a new container syncs the key
    outcome = baseline.invoke(env=env)

    # THEN a retryable configuration error
    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", True, 500, 0), outcome)


# --------------------------------------------------------------------------- schedule


def test_scheduled_run_raises_retryable_failures_for_lambda_to_retry(baseline: Baseline):
    # GIVEN Cloudflare keeps failing with a 503
    baseline.stack.emulator.add_fault(status=503, times=-1, path_contains="/bulk/get")

    # WHEN the schedule syncs the key
    outcome = baseline.invoke(load_event("scheduledEvent.json"), env={"DEFAULT_KEY_NAME": KEY})

    # THEN the handler raised the retryable error, so that Lambda retries it
    assert outcome.raised is not None
    assert outcome.raised["type"] == "API_ERROR"
    assert outcome.raised["is_retryable"] is True
    assert outcome.failure_types() == ["API_ERROR"]
    assert_old_or_new(baseline, expect_new=False)
    # AND the trace recorded it on the handler's subsegment, with no secret in it
    (handler,) = [e for e in outcome.subsegments() if e["name"] == "## lambda_handler"]
    assert handler["fault"] is True
    assert outcome.exceptions()[handler["cause"]]["type"] == "ApiError"
    outcome.assert_no_secrets(*baseline.secrets())


def test_scheduled_run_raises_permanent_failures_too(baseline: Baseline):
    # GIVEN Cloudflare refuses the token
    baseline.stack.emulator.add_fault(status=403, times=-1, path_contains="/bulk/get")

    # WHEN the schedule syncs the key
    outcome = baseline.invoke(load_event("scheduledEvent.json"), env={"DEFAULT_KEY_NAME": KEY})

    # THEN the handler raised the failure, though a retry would not help: nobody reads a
    # scheduled run's reply, so Lambda's Errors metric and failure queue must see it
    assert outcome.raised is not None
    assert outcome.raised["type"] == "AUTH_ERROR"
    assert outcome.raised["is_retryable"] is False
    assert outcome.failure_types() == ["AUTH_ERROR"]
    assert_old_or_new(baseline, expect_new=False)
    outcome.assert_no_secrets(*baseline.secrets())
