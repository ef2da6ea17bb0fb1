"""Fault matrix: Cloudflare, DynamoDB and Secrets Manager failures, end to end.

Every case runs the real handler over real sockets (KV emulator, moto server, and for
faults moto cannot produce, the AWS fault proxy) through the Function URL path, and
checks the same things:

- the error type and ``is_retryable`` in the reply, and the HTTP status;
- the wall time: within the case's bound and never past the Lambda deadline;
- the metrics: ``SyncFailed`` with the right ``ErrorType`` (or ``SyncSucceeded``), and
  ``CloudflareApiCalls``/``CloudflareRetries``/``DynamoDBWrites`` matching the reply;
- DynamoDB holds the old record untouched, or the complete new one, never a mix;
- nothing captured (logs, metrics, replies, trace data) holds the token or the secret.

The setup of each case: the key was synced once (old value), then changed in KV (new
value), so a failed sync must leave the old record exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import load_event
from tests.hardening.conftest import AwsFaultProxy, Outcome, Probe
from tests.integration.conftest import TOKEN, Stack

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
    probe: Probe
    old: dict[str, Any]
    secret_string: str

    def secrets(self) -> tuple[str, ...]:
        return (TOKEN, self.secret_string)


@pytest.fixture
def baseline(stack: Stack, probe: Probe, fast_retries: None) -> Baseline:
    ns = stack.namespace_id
    stack.emulator.put(ns, KEY, OLD, metadata={"owner": "ops"})
    first = stack.invoke({"key_name": KEY})
    assert first["success"] is True, first
    stack.emulator.put(ns, KEY, NEW, metadata={"owner": "ops", "rev": 2})
    old = stack.item(KEY)
    assert old is not None and old["value"] == OLD
    secret_string = stack.secrets.get_secret_value(SecretId=stack.secret)["SecretString"]
    stack.emulator.reset_stats()
    probe.reset()
    return Baseline(stack, probe, old, secret_string)


@dataclass(frozen=True)
class Case:
    """One fault and what the function must make of it (``error=None``: it recovers)."""

    id: str
    arrange: Callable[[Stack, pytest.MonkeyPatch], None]
    error: str | None
    retryable: bool | None
    status: int
    calls: int | None = None
    max_s: float = 2.0
    min_s: float = 0.0
    timeout_ms: int = 30_000
    retry_after: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def fault(**kwargs: Any) -> Callable[[Stack, pytest.MonkeyPatch], None]:
    """Arrange an emulator fault on the bulk-get call the single-key sync makes."""

    def arrange(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
        stack.emulator.add_fault(path_contains="/bulk/get", **kwargs)

    return arrange


def refused(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_BASE_URL", f"http://127.0.0.1:{closed_port()}/client/v4")


def key_gone(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    stack.emulator.delete(stack.namespace_id, KEY)


def nothing(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    pass


CLOUDFLARE_CASES = [
    Case("429-retry-after-once", fault(status=429, retry_after="1"), None, None, 200, 2, 2.5, 1.0),
    Case(
        "429-retry-after-always",
        fault(status=429, retry_after="1", times=-1),
        "RATE_LIMITED",
        True,
        503,
        2,
        2.5,
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
        max_s=2.0,
        env={"API_TIMEOUT_SECONDS": "1"},
    ),
    Case(
        "slower-than-read-timeout-always",
        fault(delay=1.2, times=-1),
        "TIMEOUT",
        True,
        504,
        2,
        max_s=2.2,
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
        max_s=1.5,
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
    doc = outcome.document
    # no unhandled exception, and the Function URL reply is well formed
    assert outcome.raised is None, outcome.raised
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

    # bounded wall time, never past the deadline
    assert case.min_s <= outcome.elapsed <= case.max_s, outcome.elapsed
    assert outcome.elapsed < case.timeout_ms / 1000

    # metrics: one failure with its type, or one success; counters match the reply
    probe = base.probe
    if case.error is None:
        assert probe.failure_types() == []
        assert probe.metric("SyncSucceeded") == 1
    else:
        assert probe.failure_types() == [case.error]
        assert probe.metric("SyncSucceeded") is None
    assert probe.metric("CloudflareApiCalls") == stats["cloudflare_api_calls"]
    assert probe.metric("CloudflareRetries") == stats["cloudflare_retries"]
    assert probe.metric("DynamoDBWrites") == stats["dynamodb_writes"]

    # DynamoDB: the old record untouched, or the whole new one
    expect_new = (case.error is None) if new_record is None else new_record
    assert_old_or_new(base, expect_new)

    # traced as X-Ray would see it, and secret hygiene over everything captured
    assert any(a.get("key_name") == KEY for a in probe.annotations()), probe.trace_documents()
    probe.assert_no_secrets(*base.secrets())


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
def test_cloudflare_fault(baseline: Baseline, case: Case, monkeypatch: pytest.MonkeyPatch):
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    case.arrange(baseline.stack, monkeypatch)

    outcome = baseline.probe.invoke(baseline.stack, url_event(), timeout_ms=case.timeout_ms)

    check(baseline, case, outcome)
    baseline.stack.emulator.clear_faults()


# --------------------------------------------------------------------------- DynamoDB


@pytest.fixture
def proxied(aws_proxy: AwsFaultProxy, baseline: Baseline) -> AwsFaultProxy:
    aws_proxy.calls.clear()
    return aws_proxy


@dataclass(frozen=True)
class AwsCase:
    """A fault on one AWS operation, given to the proxy."""

    id: str
    operation: str
    faults: tuple[tuple[str | None, int, int], ...]  # (code, status, times); None passes
    case: Case
    statuses: tuple[int, ...] | None = None
    message: str = "injected fault"


# botocore's standard mode, max_attempts=5 (aws_clients): the first call and 5 retries.
DYNAMODB_CASES = [
    AwsCase(
        "throttled-then-recovers",
        "UpdateItem",
        (("ProvisionedThroughputExceededException", 400, 2),),
        Case("", nothing, None, None, 200, 1),
        # two throttles retried by botocore, the refresh's condition fails, the full write lands
        statuses=(400, 400, 400, 200),
    ),
    AwsCase(
        "throttled-always",
        "UpdateItem",
        (("ProvisionedThroughputExceededException", 400, -1),),
        Case("", nothing, "STORAGE_ERROR", True, 500, 1),
        statuses=(400,) * 6,
    ),
    AwsCase(
        "internal-server-error-always",
        "UpdateItem",
        (("InternalServerError", 500, -1),),
        Case("", nothing, "STORAGE_ERROR", True, 500, 1),
        statuses=(500,) * 6,
    ),
    AwsCase(
        "conditional-check-failed-both-writes",
        "UpdateItem",
        (("ConditionalCheckFailedException", 400, 2),),
        Case("", nothing, None, None, 200, 1),
        statuses=(400, 400),
        message="The conditional request failed",
    ),
    AwsCase(
        "item-too-large",
        "UpdateItem",
        ((None, 0, 1), ("ValidationException", 400, 1)),
        Case("", nothing, "VALUE_TOO_LARGE", False, 422, 1),
        statuses=(400, 400),
        message="Item size has exceeded the maximum allowed size",
    ),
    AwsCase(
        "table-not-found",
        "UpdateItem",
        (("ResourceNotFoundException", 400, -1),),
        Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1),
        statuses=(400,),
        message="Requested resource not found",
    ),
    AwsCase(
        "access-denied",
        "UpdateItem",
        (("AccessDeniedException", 400, -1),),
        Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1),
        statuses=(400,),
        message="User is not authorized to perform: dynamodb:UpdateItem",
    ),
]


@pytest.mark.parametrize("aws_case", DYNAMODB_CASES, ids=lambda c: c.id)
def test_dynamodb_fault(baseline: Baseline, proxied: AwsFaultProxy, aws_case: AwsCase):
    for code, status, times in aws_case.faults:
        proxied.add_fault(
            aws_case.operation, code, status=status, times=times, message=aws_case.message
        )

    outcome = baseline.probe.invoke(baseline.stack, url_event())

    superseded = aws_case.id.startswith("conditional")
    check(
        baseline, aws_case.case, outcome, new_record=aws_case.case.error is None and not superseded
    )
    assert tuple(proxied.operations(aws_case.operation)) == aws_case.statuses
    if superseded:
        assert outcome.document["data"]["record"]["superseded"] is True
        assert outcome.document["data"]["processing_summary"]["record_stored"] is False


def test_newer_record_in_table_wins_over_this_sync(baseline: Baseline):
    """A real ConditionalCheckFailed: the table already holds a newer sync of the key."""
    stack = baseline.stack
    stack.dynamodb.update_item(
        TableName=stack.table,
        Key={"pk": {"S": baseline.old["pk"]}, "sk": {"S": baseline.old["sk"]}},
        UpdateExpression="SET synced_at = :s",
        ExpressionAttributeValues={":s": {"S": "2999-01-01T00:00:00.000000Z"}},
    )
    before = stack.item(KEY)

    outcome = baseline.probe.invoke(stack, url_event())

    assert outcome.status == 200
    assert outcome.document["data"]["record"]["superseded"] is True
    assert stack.item(KEY) == before
    assert baseline.probe.metric("DynamoDBWrites") == 2
    baseline.probe.assert_no_secrets(*baseline.secrets())


def test_missing_table_is_configuration_error(baseline: Baseline, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", "no-such-table")

    outcome = baseline.probe.invoke(baseline.stack, url_event())

    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 1), outcome)
    assert "no-such-table" in outcome.error["message"]  # type: ignore[index]


def test_value_too_large_even_compressed_writes_nothing(baseline: Baseline, proxied: AwsFaultProxy):
    # 600 KB of random bytes: over the 400 KB item limit and incompressible
    stack = baseline.stack
    stack.emulator.put(stack.namespace_id, KEY, os.urandom(600 * 1024))

    outcome = baseline.probe.invoke(stack, url_event())

    # bulk get refuses the binary value, then the raw value and its metadata are read
    check(baseline, Case("", nothing, "VALUE_TOO_LARGE", False, 422, 3), outcome)
    assert proxied.operations("UpdateItem") == []
    assert outcome.document["statistics"]["dynamodb_writes"] == 0


def test_hung_dynamodb_still_answers_before_the_deadline(
    baseline: Baseline, proxied: AwsFaultProxy
):
    release = threading.Event()
    proxied.add_fault("UpdateItem", None, times=-1, hang=release)
    result: list[Outcome] = []
    worker = threading.Thread(
        target=lambda: result.append(
            baseline.probe.invoke(baseline.stack, url_event(), timeout_ms=1_500)
        ),
        daemon=True,
    )
    worker.start()
    try:
        worker.join(2.3)  # the deadline, plus 0.8 s of grace
        assert not worker.is_alive(), "still running 0.8 s after the Lambda deadline"
        assert result[0].status in (500, 504)
    finally:
        release.set()
        worker.join(15)


# --------------------------------------------------------------------------- Secrets Manager


def put_raw_secret(stack: Stack, raw: str) -> None:
    stack.secrets.put_secret_value(SecretId=stack.secret, SecretString=raw)


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
    import credentials

    stack = baseline.stack
    put_raw_secret(stack, raw)
    credentials.reset_cache()  # a cold container reads the new secret

    outcome = baseline.probe.invoke(stack, url_event())

    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 0), outcome)
    message = outcome.error["message"]  # type: ignore[index]
    for name in named:
        assert name in message
    assert stack.emulator.requests == []
    baseline.probe.assert_no_secrets(*([raw] if raw.strip() else []), TOKEN)


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
    import credentials

    credentials.reset_cache()
    proxied.add_fault("GetSecretValue", code, times=-1)

    outcome = baseline.probe.invoke(baseline.stack, url_event())

    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", retryable, 500, 0), outcome)
    assert code in outcome.error["message"]  # type: ignore[index]
    assert tuple(proxied.operations("GetSecretValue")) == statuses
    assert baseline.stack.emulator.requests == []


def test_secret_that_does_not_exist(baseline: Baseline, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", "no-such-secret")

    outcome = baseline.probe.invoke(baseline.stack, url_event())

    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 0), outcome)
    assert "ResourceNotFoundException" in outcome.error["message"]  # type: ignore[index]


def test_secret_without_a_value(baseline: Baseline, monkeypatch: pytest.MonkeyPatch):
    baseline.stack.secrets.create_secret(Name="no-value-yet")
    monkeypatch.setenv("SECRETS_MANAGER_SECRET_NAME", "no-value-yet")
    try:
        outcome = baseline.probe.invoke(baseline.stack, url_event())
    finally:
        baseline.stack.secrets.delete_secret(
            SecretId="no-value-yet", ForceDeleteWithoutRecovery=True
        )

    check(baseline, Case("", nothing, "CONFIGURATION_ERROR", False, 500, 0), outcome)


def test_unreachable_secrets_manager_is_retryable(
    baseline: Baseline, monkeypatch: pytest.MonkeyPatch
):
    import aws_clients
    import credentials

    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", f"http://127.0.0.1:{closed_port()}")
    aws_clients.reset_clients()
    credentials.reset_cache()

    outcome = baseline.probe.invoke(baseline.stack, url_event())

    assert outcome.status == 500
    assert outcome.error["type"] == "CONFIGURATION_ERROR"  # type: ignore[index]
    assert outcome.error["is_retryable"] is True  # type: ignore[index]


# --------------------------------------------------------------------------- schedule


def test_scheduled_run_raises_retryable_failures_for_lambda_to_retry(
    baseline: Baseline, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DEFAULT_KEY_NAME", KEY)
    baseline.stack.emulator.add_fault(status=503, times=-1, path_contains="/bulk/get")

    outcome = baseline.probe.invoke(baseline.stack, _scheduled())

    from errors import SyncError

    assert isinstance(outcome.raised, SyncError)
    assert outcome.raised.type == "API_ERROR" and outcome.raised.is_retryable
    assert baseline.probe.failure_types() == ["API_ERROR"]
    assert_old_or_new(baseline, expect_new=False)
    baseline.probe.assert_no_secrets(*baseline.secrets())


def test_scheduled_run_returns_permanent_failures(
    baseline: Baseline, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("DEFAULT_KEY_NAME", KEY)
    baseline.stack.emulator.add_fault(status=403, times=-1, path_contains="/bulk/get")

    outcome = baseline.probe.invoke(baseline.stack, _scheduled())

    assert outcome.raised is None
    assert outcome.document["error"]["type"] == "AUTH_ERROR"
    assert baseline.probe.failure_types() == ["AUTH_ERROR"]
    baseline.probe.assert_no_secrets(*baseline.secrets())


def _scheduled() -> dict[str, Any]:
    return load_event("scheduledEvent.json")
