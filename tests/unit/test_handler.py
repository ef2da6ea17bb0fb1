"""The handler end to end, with moto in-process and Cloudflare mocked by ``responses``.

Single-key syncs (``key_name``, the default key) by direct invocation and Function
URL, the error documents and HTTP statuses, the metrics and the logs. Scheduled
invocations are in ``test_scheduled_runs.py``; multi-key runs in ``test_engine.py``;
the write policy every selector shares in ``test_write_policy.py``.
"""

from __future__ import annotations

import json
import random
from typing import Any

import boto3
import pytest
import requests
import responses
from moto import mock_aws

from kv_sync import engine
from kv_sync.handler import lambda_handler
from tests.support.cloudflare import (
    BULK_GET_URL,
    NAMESPACE_ID,
    NAMESPACE_URL,
    SECRET,
    SECRET_VALUE,
    TOKEN,
    bulk_get_reply,
    failure,
    stored_item,
)
from tests.support.function import load_event
from tests.support.sync_runs import emf_documents, failed_metrics, metric_value

DEFAULT_KEY = "redirect-all-users-to-essentials"
SINGLE_KEY_STATISTICS = {
    "execution_time_ms",
    "cloudflare_api_calls",
    "cloudflare_retries",
    "dynamodb_writes",
    "records_processed",
    "records_stored",
    "success_rate",
}


def invoke(event: Any, context: Any) -> Any:
    return lambda_handler(event, context)


def body(response: dict[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(response["body"])
    return document


# ----------------------------------------------------------------------- success


def test_direct_invocation_syncs_default_key(aws, cf, lambda_context, capsys):
    # GIVEN the default key holds a JSON flag with metadata and an expiry
    cf.post(
        BULK_GET_URL,
        json=bulk_get_reply(
            DEFAULT_KEY, '{"enabled": true}', {"owner": "web", "pct": 12.5}, 1_900_000_000
        ),
    )

    # WHEN the function is invoked with an empty event
    response = invoke({}, lambda_context)

    # THEN it reports success and the record holds the exact value and metadata
    assert response["success"] is True
    data = response["data"]
    assert data["message"] == f"Synced '{DEFAULT_KEY}': value stored"
    assert data["key_name"] == DEFAULT_KEY
    assert data["record"] == {
        "pk": f"NAMESPACE#{NAMESPACE_ID}",
        "sk": f"KEY#{DEFAULT_KEY}",
        "value_type": "json",
        "size_bytes": 17,
        "changed": True,
        "superseded": False,
    }
    assert data["processing_summary"] == {
        "key_retrieved": True,
        "record_processed": True,
        "record_stored": True,
        "record_failed": False,
    }
    assert data["lambda"]["request_id"] == lambda_context.aws_request_id
    assert 0 < data["lambda"]["remaining_time_ms"] <= 300_000
    stats = response["statistics"]
    assert set(stats) == SINGLE_KEY_STATISTICS
    assert stats["cloudflare_api_calls"] == 1
    assert stats["cloudflare_retries"] == 0
    assert stats["dynamodb_writes"] == 1
    assert stats["records_processed"] == 1
    assert stats["records_stored"] == 1
    assert stats["success_rate"] == 1.0

    item = stored_item(aws, DEFAULT_KEY)
    assert item is not None
    assert item["value"] == '{"enabled": true}'
    assert item["metadata"] == {"owner": "web", "pct": pytest.approx(12.5)}
    assert item["expiration"] == 1_900_000_000
    assert item["ttl"] == 1_900_000_000
    assert item["namespace_name"] == "flags"
    assert item["created_at"] == item["updated_at"] == item["synced_at"]
    assert item["created_at"].endswith("Z")

    # AND the success metrics were emitted as EMF
    docs = emf_documents(capsys.readouterr().out)
    assert metric_value(docs, "SyncSucceeded") == 1
    assert metric_value(docs, "CloudflareApiCalls") == 1
    assert metric_value(docs, "DynamoDBWrites") == 1
    assert metric_value(docs, "ValueBytes") == 17
    assert failed_metrics(docs) == []


def test_resync_of_unchanged_value_writes_nothing(aws, cf, lambda_context, dynamodb_calls):
    # GIVEN a key already synced once
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "classic.example.com"))
    first = invoke({"key_name": "classic-domain"}, lambda_context)
    before = stored_item(aws, "classic-domain")
    dynamodb_calls.clear()

    # WHEN it is synced again with the same value
    second = invoke({"key_name": "classic-domain"}, lambda_context)

    # THEN it reports the key unchanged, after one bulk get and one batch read, no write
    assert first["data"]["record"]["changed"] is True
    assert second["success"] is True
    assert second["data"]["message"] == "Synced 'classic-domain': unchanged"
    assert second["data"]["record"]["changed"] is False
    assert second["data"]["record"]["superseded"] is False
    assert second["data"]["processing_summary"]["record_stored"] is True
    assert second["statistics"]["dynamodb_writes"] == 0
    assert second["statistics"]["cloudflare_api_calls"] == 1
    assert second["statistics"]["records_stored"] == 1
    assert dynamodb_calls == ["BatchGetItem"]
    assert len(cf.calls) == 2
    # AND the record is exactly as it was: not even synced_at moved
    assert stored_item(aws, "classic-domain") == before


def test_changed_value_moves_updated_at_but_not_created_at(aws, cf, lambda_context):
    # GIVEN a key stored once
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "v1"))
    invoke({"key_name": "classic-domain"}, lambda_context)
    before = stored_item(aws, "classic-domain")

    # WHEN its value changes in KV and it is synced again
    cf.replace(responses.POST, BULK_GET_URL, json=bulk_get_reply("classic-domain", "v2"))
    response = invoke({"key_name": "classic-domain"}, lambda_context)
    after = stored_item(aws, "classic-domain")

    # THEN the value and updated_at move with one write; created_at stays
    assert response["data"]["record"]["changed"] is True
    assert response["data"]["message"] == "Synced 'classic-domain': value stored"
    assert response["statistics"]["dynamodb_writes"] == 1
    assert before is not None and after is not None
    assert after["value"] == "v2"
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]
    assert after["synced_at"] == after["updated_at"]


def test_binary_value_is_stored_as_binary(aws, cf, lambda_context):
    # GIVEN a value that is not UTF-8, which bulk get refuses
    cf.post(BULK_GET_URL, status=400, json=failure(10025, "not valid UTF-8"))
    cf.get(f"{NAMESPACE_URL}/values/logo", body=b"\x89PNG\xff")
    cf.get(
        f"{NAMESPACE_URL}/metadata/logo",
        json={"success": True, "errors": [], "messages": [], "result": {"kind": "png"}},
    )

    # WHEN it is synced
    response = invoke({"key_name": "logo"}, lambda_context)

    # THEN the exact bytes are stored as Binary, with the metadata
    assert response["data"]["record"]["value_type"] == "binary"
    item = stored_item(aws, "logo")
    assert item is not None
    assert bytes(item["value"]) == b"\x89PNG\xff"
    assert item["metadata"] == {"kind": "png"}
    assert response["statistics"]["cloudflare_api_calls"] == 3


@pytest.mark.parametrize(
    "event_file",
    [
        "lambdaFunctionUrlIAMEvent.json",
        "lambdaFunctionUrlIAMEventBase64.json",
        "lambdaFunctionUrlIAMEventGet.json",
    ],
)
def test_function_url_syncs_named_key(aws, cf, lambda_context, event_file):
    # GIVEN a Function URL request naming classic-domain (JSON, base64 or query)
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "classic.example.com"))

    # WHEN it is handled
    response = invoke(load_event(event_file), lambda_context)

    # THEN the reply is an HTTP 200 carrying the JSON document
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert response["isBase64Encoded"] is False
    document = body(response)
    assert document["success"] is True
    assert document["data"]["key_name"] == "classic-domain"
    assert stored_item(aws, "classic-domain") is not None


def test_function_url_empty_body_syncs_default_key(aws, cf, lambda_context):
    # GIVEN a Function URL POST without a body
    cf.post(BULK_GET_URL, json=bulk_get_reply(DEFAULT_KEY, "true"))

    # WHEN it is handled
    response = invoke(load_event("lambdaFunctionUrlIAMEventEmptyBody.json"), lambda_context)

    # THEN the default key is synced
    assert response["statusCode"] == 200
    assert body(response)["data"]["key_name"] == DEFAULT_KEY


# ----------------------------------------------------------------------- failures


def test_function_url_rejects_other_methods_with_allow_header(aws, cf, lambda_context, capsys):
    # GIVEN a DELETE request
    event = load_event("lambdaFunctionUrlIAMEventDelete.json")

    # WHEN it is handled
    response = invoke(event, lambda_context)

    # THEN it is 405 with Allow, and nothing reached Cloudflare
    assert response["statusCode"] == 405
    assert response["headers"]["Allow"] == "GET, POST"
    assert body(response)["error"]["type"] == "METHOD_NOT_ALLOWED"
    assert len(cf.calls) == 0
    assert failed_metrics(emf_documents(capsys.readouterr().out)) == ["METHOD_NOT_ALLOWED"]


@pytest.mark.parametrize(
    "event",
    [{"key_name": ".."}, {"key_name": "a", "extra": 1}, {"key_name": "x" * 513}, ["k"]],
    ids=["dotdot", "unknown-field", "too-long", "not-an-object"],
)
def test_bad_input_is_rejected_before_cloudflare_or_dynamodb(
    aws, cf, lambda_context, dynamodb_calls, event
):
    # GIVEN a malformed event
    # WHEN it is handled
    response = invoke(event, lambda_context)

    # THEN it is a VALIDATION_ERROR, and nothing was read or written anywhere
    assert response["success"] is False
    assert response["error"]["type"] == "VALIDATION_ERROR"
    assert response["error"]["severity"] == "warning"
    assert response["statistics"]["records_processed"] == 0
    assert len(cf.calls) == 0
    assert dynamodb_calls == []


def test_direct_invocation_returns_retryable_failures_as_a_document(
    aws, cf, lambda_context, monkeypatch
):
    # GIVEN Cloudflare is down for longer than the retry budget (two attempts)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    cf.post(BULK_GET_URL, status=503, json=failure(10001, "service unavailable"))

    # WHEN a direct invocation asks for a key
    response = invoke({"key_name": "k"}, lambda_context)

    # THEN the caller gets the document and decides from is_retryable
    assert response["error"]["type"] == "API_ERROR"
    assert response["error"]["is_retryable"] is True
    assert response["statistics"]["cloudflare_api_calls"] == 2
    assert response["statistics"]["cloudflare_retries"] == 1


def test_missing_key_is_not_found_and_leaves_record_alone(aws, cf, lambda_context, dynamodb_calls):
    # GIVEN a stored record for a key
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "v1"))
    invoke({"key_name": "classic-domain"}, lambda_context)
    dynamodb_calls.clear()

    # WHEN the key has been deleted in KV and is synced again
    cf.replace(responses.POST, BULK_GET_URL, json=bulk_get_reply("classic-domain", None))
    response = invoke({"key_name": "classic-domain"}, lambda_context)

    # THEN the result is NOT_FOUND, not retryable, and the record is untouched
    assert response["success"] is False
    assert response["error"]["type"] == "NOT_FOUND"
    assert response["error"]["message"] == (
        "Key 'classic-domain' does not exist in the KV namespace"
    )
    assert response["error"]["is_retryable"] is False
    assert response["error"]["severity"] == "warning"
    assert response["error"]["timestamp"].endswith("Z")
    assert response["statistics"]["success_rate"] == 0.0
    assert response["statistics"]["dynamodb_writes"] == 0
    item = stored_item(aws, "classic-domain")
    assert item is not None and item["value"] == "v1"
    assert "DeleteItem" not in dynamodb_calls


def test_missing_key_with_delete_missing_deletes_its_record_once_forced(aws, cf, lambda_context):
    # GIVEN a stored record whose key was since deleted in KV
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "v1"))
    invoke({"key_name": "classic-domain"}, lambda_context)
    cf.replace(responses.POST, BULK_GET_URL, json=bulk_get_reply("classic-domain", None))

    # WHEN it is synced with delete_missing
    refused = invoke({"key_name": "classic-domain", "delete_missing": True}, lambda_context)

    # THEN the deletion guard keeps the record: it is all of the selection's records
    assert refused["error"]["type"] == "DELETION_REFUSED"
    assert refused["statistics"]["dynamodb_writes"] == 0
    assert stored_item(aws, "classic-domain") is not None

    # WHEN it is synced with delete_missing and force_delete
    response = invoke(
        {"key_name": "classic-domain", "delete_missing": True, "force_delete": True},
        lambda_context,
    )

    # THEN it is still NOT_FOUND, saying the record was deleted, and it is gone
    assert response["error"]["type"] == "NOT_FOUND"
    assert response["error"]["message"] == (
        "Key 'classic-domain' does not exist in the KV namespace; its DynamoDB record was deleted"
    )
    assert response["statistics"]["dynamodb_writes"] == 1
    assert stored_item(aws, "classic-domain") is None


def test_missing_key_with_delete_missing_and_no_record(aws, cf, lambda_context, dynamodb_calls):
    # GIVEN a key that is neither in KV nor stored
    cf.post(BULK_GET_URL, json=bulk_get_reply("never-there", None))

    # WHEN it is synced with delete_missing from the deployment's default
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DELETE_MISSING", "true")
        response = invoke({"key_name": "never-there"}, lambda_context)

    # THEN NOT_FOUND says there was nothing to delete, and nothing was written
    assert response["error"]["message"] == (
        "Key 'never-there' does not exist in the KV namespace; no record to delete"
    )
    assert response["statistics"]["dynamodb_writes"] == 0
    assert "DeleteItem" not in dynamodb_calls


def test_missing_key_through_the_function_url_is_404(aws, cf, lambda_context):
    # GIVEN a key that does not exist
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", None))

    # WHEN a Function URL request asks for it
    response = invoke(load_event("lambdaFunctionUrlIAMEvent.json"), lambda_context)

    # THEN the answer is 404 NOT_FOUND
    assert response["statusCode"] == 404
    assert body(response)["error"]["type"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("status", "reply", "headers", "http_status", "error_type"),
    [
        (404, failure(10009, "get: 'key not found'"), {}, 404, "NOT_FOUND"),
        (401, failure(10000, "Authentication error"), {}, 502, "AUTH_ERROR"),
        (403, failure(10000, "Authentication error"), {}, 502, "AUTH_ERROR"),
        (429, failure(10029, "rate limited"), {"Retry-After": "1"}, 503, "RATE_LIMITED"),
        (500, failure(10001, "internal"), {}, 502, "API_ERROR"),
        (400, failure(10026, "bad request"), {}, 502, "API_ERROR"),
        (404, failure(10013, "namespace not found"), {}, 500, "CONFIGURATION_ERROR"),
    ],
)
def test_function_url_maps_error_types_to_statuses(
    aws, cf, lambda_context, monkeypatch, capsys, status, reply, headers, http_status, error_type
):
    # GIVEN Cloudflare answers every read with this error (one attempt: retries are
    # test_cloudflare.py's business)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    cf.post(BULK_GET_URL, status=status, json=reply, headers=headers)
    cf.get(f"{NAMESPACE_URL}/values/classic-domain", status=status, json=reply, headers=headers)

    # WHEN a Function URL request arrives
    response = invoke(load_event("lambdaFunctionUrlIAMEvent.json"), lambda_context)

    # THEN the HTTP status follows the error type, and the failure is counted by type
    assert response["statusCode"] == http_status
    document = body(response)
    assert document["success"] is False
    assert document["error"]["type"] == error_type
    if http_status == 503:
        assert response["headers"]["Retry-After"] == "1"
    assert failed_metrics(emf_documents(capsys.readouterr().out)) == [error_type]


@pytest.mark.parametrize(
    ("fault", "http_status", "error_type"),
    [
        (requests.exceptions.ReadTimeout("slow"), 504, "TIMEOUT"),
        (requests.exceptions.ConnectionError("refused"), 502, "NETWORK_ERROR"),
    ],
)
def test_connection_failures_map_to_their_statuses(
    aws, cf, lambda_context, monkeypatch, fault, http_status, error_type
):
    # GIVEN Cloudflare unreachable in this way
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    cf.post(BULK_GET_URL, body=fault)

    # WHEN a Function URL request arrives
    response = invoke(load_event("lambdaFunctionUrlIAMEvent.json"), lambda_context)

    # THEN the status and type say what happened, and that a retry may help
    assert response["statusCode"] == http_status
    assert body(response)["error"]["type"] == error_type
    assert body(response)["error"]["is_retryable"] is True


def test_value_too_large_is_422_and_writes_nothing(aws, cf, lambda_context, dynamodb_calls):
    # GIVEN 450 KB of random bytes, which do not fit a DynamoDB item even compressed
    blob = random.Random(1).randbytes(450_000)
    cf.post(BULK_GET_URL, status=400, json=failure(10025, "not valid UTF-8"))
    cf.get(f"{NAMESPACE_URL}/values/classic-domain", body=blob)
    cf.get(
        f"{NAMESPACE_URL}/metadata/classic-domain",
        json={"success": True, "errors": [], "messages": [], "result": None},
    )

    # WHEN it is synced through the Function URL
    response = invoke(load_event("lambdaFunctionUrlIAMEvent.json"), lambda_context)

    # THEN it is VALUE_TOO_LARGE (422), not retryable, and nothing was written
    assert response["statusCode"] == 422
    assert body(response)["error"]["type"] == "VALUE_TOO_LARGE"
    assert body(response)["error"]["is_retryable"] is False
    assert "UpdateItem" not in dynamodb_calls
    assert stored_item(aws, "classic-domain") is None


def test_missing_table_is_a_configuration_error_naming_it(aws, cf, lambda_context, monkeypatch):
    # GIVEN the function is pointed at a table that does not exist
    monkeypatch.setenv("DYNAMODB_TABLE_NAME", "no-such-table")
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "v"))

    # WHEN a key is synced through the Function URL
    response = invoke(load_event("lambdaFunctionUrlIAMEvent.json"), lambda_context)

    # THEN the operator is told which table, as a 500 configuration error
    assert response["statusCode"] == 500
    error = body(response)["error"]
    assert error["type"] == "CONFIGURATION_ERROR"
    assert error["severity"] == "critical"
    assert "'no-such-table'" in error["message"]


def test_rotated_token_is_picked_up_after_one_401(aws, cf, lambda_context):
    # GIVEN a warm container that cached the old token
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    assert invoke({"key_name": "k"}, lambda_context)["success"] is True

    # AND the token was rotated: Cloudflare rejects the old one, the secret holds the new one
    boto3.client("secretsmanager").put_secret_value(
        SecretId=SECRET, SecretString=json.dumps({**SECRET_VALUE, "api_token": "new-token"})
    )

    def by_token(request: Any) -> tuple[int, dict[str, str], str]:
        if request.headers["Authorization"] == "Bearer new-token":
            return 200, {}, json.dumps(bulk_get_reply("k", "v"))
        return 401, {}, json.dumps(failure(10000, "Authentication error"))

    cf.remove(responses.POST, BULK_GET_URL)
    cf.add_callback(responses.POST, BULK_GET_URL, callback=by_token)

    # WHEN the next invocation runs
    response = invoke({"key_name": "k"}, lambda_context)

    # THEN it re-read the secret once and succeeded with the new token
    assert response["success"] is True
    assert response["statistics"]["cloudflare_api_calls"] == 2
    assert [c.request.headers["Authorization"] for c in cf.calls[-2:]] == [
        f"Bearer {TOKEN}",
        "Bearer new-token",
    ]


def test_still_rejected_token_is_auth_error_after_one_reread(aws, cf, lambda_context):
    # GIVEN Cloudflare rejecting the token, also after the secret is re-read
    cf.post(BULK_GET_URL, status=403, json=failure(10000, "Authentication error"))

    # WHEN a key is synced
    response = invoke({"key_name": "k"}, lambda_context)

    # THEN it is a critical AUTH_ERROR after exactly two calls
    assert response["error"]["type"] == "AUTH_ERROR"
    assert response["error"]["is_retryable"] is False
    assert response["error"]["severity"] == "critical"
    assert len(cf.calls) == 2


def test_secret_without_value_is_configuration_error(cf, lambda_context):
    # GIVEN the secret exists (Terraform made it) but nobody put a value yet
    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name=SECRET)
        response = invoke({}, lambda_context)

    # THEN the operator is told what to do, and nothing reached Cloudflare
    assert response["error"]["type"] == "CONFIGURATION_ERROR"
    assert "put-secret-value" in response["error"]["message"]
    assert len(cf.calls) == 0


def test_missing_table_setting_is_configuration_error(aws, cf, lambda_context, monkeypatch):
    # GIVEN a deployment without DYNAMODB_TABLE_NAME
    monkeypatch.delenv("DYNAMODB_TABLE_NAME")

    # WHEN the function is invoked
    response = invoke({}, lambda_context)

    # THEN it is a configuration error naming the variable, before any call
    assert response["error"]["type"] == "CONFIGURATION_ERROR"
    assert "DYNAMODB_TABLE_NAME" in response["error"]["message"]
    assert len(cf.calls) == 0


def test_unexpected_exception_is_internal_error_without_stack_trace(
    aws, cf, lambda_context, monkeypatch, log_stream
):
    # GIVEN a warm container that has loaded the token
    cf.post(BULK_GET_URL, json=bulk_get_reply(DEFAULT_KEY, "v"))
    assert invoke({}, lambda_context)["success"] is True
    log_stream.seek(0)
    log_stream.truncate()

    # AND a bug deep in the run, whose exception quotes the token
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"boom with {TOKEN}")

    monkeypatch.setattr(engine, "run", explode)

    # WHEN the function is invoked
    response = invoke({}, lambda_context)

    # THEN the caller gets INTERNAL_ERROR without a trace or the token
    assert response["error"]["type"] == "INTERNAL_ERROR"
    assert "Traceback" not in json.dumps(response)
    assert TOKEN not in json.dumps(response)
    # AND the log has the trace for the operator, still without the token
    out = log_stream.getvalue()
    unexpected = [json.loads(line) for line in out.splitlines() if "Unexpected failure" in line]
    assert unexpected and "RuntimeError" in unexpected[0]["traceback"]
    assert TOKEN not in out


def test_logs_carry_key_name_and_never_the_token_or_value(aws, cf, lambda_context, log_stream):
    # GIVEN a key holding a value that must not be logged
    secret_value = "s3cr3t-flag-value-" + "x" * 40
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", secret_value))

    # WHEN it is synced
    invoke({"key_name": "classic-domain"}, lambda_context)

    # THEN every log line names the key and the service, and none holds the token or the value
    out = log_stream.getvalue()
    log_lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"level"')]
    assert log_lines, "expected structured log lines"
    assert all(line["key_name"] == "classic-domain" for line in log_lines)
    assert all(line["service"] == "kv-sync" for line in log_lines)
    assert TOKEN not in out
    assert secret_value not in out


def test_cloudflare_error_text_quoting_the_token_never_reaches_reply_or_logs(
    aws, cf, lambda_context, log_stream
):
    # GIVEN a Cloudflare error whose message quotes the request's token
    cf.post(
        BULK_GET_URL,
        status=400,
        json=failure(10001, f"bad header Authorization: Bearer {TOKEN}"),
    )
    cf.get(
        f"{NAMESPACE_URL}/values/classic-domain",
        status=400,
        json=failure(10001, f"bad header Authorization: Bearer {TOKEN}"),
    )

    # WHEN a key is synced and fails with that error
    response = invoke({"key_name": "classic-domain"}, lambda_context)

    # THEN the error is reported with Cloudflare's code, but the token is in neither
    # the reply nor any log line
    assert response["error"]["type"] == "API_ERROR"
    assert "code 10001" in response["error"]["message"]
    assert TOKEN not in json.dumps(response)
    assert TOKEN not in log_stream.getvalue()


def test_multi_key_runs_emit_record_metrics_and_failures_by_type(aws, kv, lambda_context, capsys):
    # GIVEN two keys that exist and one that does not
    kv.put("a", "1")
    kv.put("b", "2")

    # WHEN they are synced by name
    invoke({"key_names": ["a", "b", "gone"]}, lambda_context)

    # THEN the run's record metrics are emitted, and the failure counted by its type
    docs = emf_documents(capsys.readouterr().out)
    assert metric_value(docs, "RecordsWritten") == 2
    assert metric_value(docs, "RecordsUnchanged") == 0
    assert metric_value(docs, "RecordsDeleted") == 0
    assert metric_value(docs, "RecordsFailed") == 1
    assert metric_value(docs, "DynamoDBWrites") == 2
    assert failed_metrics(docs) == ["NOT_FOUND"]
    assert metric_value(docs, "SyncSucceeded") is None


def test_a_clean_multi_key_run_counts_as_succeeded(aws, kv, lambda_context, capsys):
    # GIVEN a namespace of one key
    kv.put("a", "1")

    # WHEN it is synced
    invoke({"all": True}, lambda_context)

    # THEN the run counts as succeeded, with its record metrics and no failure
    docs = emf_documents(capsys.readouterr().out)
    assert metric_value(docs, "SyncSucceeded") == 1
    assert metric_value(docs, "RecordsWritten") == 1
    assert failed_metrics(docs) == []
