"""The handler end to end, with moto in-process and Cloudflare mocked by ``responses``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import responses

from tests.conftest import load_event
from tests.unit.conftest import (
    BULK_GET_URL,
    NAMESPACE_ID,
    NAMESPACE_URL,
    TOKEN,
    bulk_get_reply,
    failure,
    stored_item,
)

DEFAULT_KEY = "redirect-all-users-to-essentials"


def invoke(event: Any, context: Any) -> Any:
    import handler

    return handler.lambda_handler(event, context)


def emf_documents(output: str) -> list[dict[str, Any]]:
    docs = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def metric_value(docs: list[dict[str, Any]], name: str) -> float | None:
    for doc in docs:
        if name in doc:
            return float(sum(doc[name])) if isinstance(doc[name], list) else float(doc[name])
    return None


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
    stats = response["statistics"]
    assert stats["cloudflare_api_calls"] == 1
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
    assert metric_value(docs, "ValueBytes") == 17


def test_resync_of_unchanged_value_keeps_updated_at(aws, cf, lambda_context):
    # GIVEN a key already synced once
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "classic.example.com"))
    first = invoke({"key_name": "classic-domain"}, lambda_context)
    before = stored_item(aws, "classic-domain")

    # WHEN it is synced again with the same value
    second = invoke({"key_name": "classic-domain"}, lambda_context)
    after = stored_item(aws, "classic-domain")

    # THEN only the sync time moved, with a single DynamoDB write
    assert first["data"]["record"]["changed"] is True
    assert second["data"]["record"]["changed"] is False
    assert second["statistics"]["dynamodb_writes"] == 1
    assert before is not None and after is not None
    assert after["updated_at"] == before["updated_at"]
    assert after["created_at"] == before["created_at"]
    assert after["synced_at"] > before["synced_at"]
    assert after["value_type"] == "string"


def test_changed_value_moves_updated_at_but_not_created_at(aws, cf, lambda_context):
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "v1"))
    invoke({"key_name": "classic-domain"}, lambda_context)
    before = stored_item(aws, "classic-domain")

    cf.replace(responses.POST, BULK_GET_URL, json=bulk_get_reply("classic-domain", "v2"))
    response = invoke({"key_name": "classic-domain"}, lambda_context)
    after = stored_item(aws, "classic-domain")

    assert response["data"]["record"]["changed"] is True
    assert before is not None and after is not None
    assert after["value"] == "v2"
    assert after["created_at"] == before["created_at"]
    assert after["updated_at"] > before["updated_at"]


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
    document = json.loads(response["body"])
    assert document["success"] is True
    assert document["data"]["key_name"] == "classic-domain"
    assert stored_item(aws, "classic-domain") is not None


def test_function_url_empty_body_syncs_default_key(aws, cf, lambda_context):
    cf.post(BULK_GET_URL, json=bulk_get_reply(DEFAULT_KEY, "true"))

    response = invoke(load_event("lambdaFunctionUrlIAMEventEmptyBody.json"), lambda_context)

    assert response["statusCode"] == 200
    assert json.loads(response["body"])["data"]["key_name"] == DEFAULT_KEY


def test_function_url_rejects_other_methods_with_allow_header(aws, cf, lambda_context, capsys):
    # GIVEN a DELETE request
    event = load_event("lambdaFunctionUrlIAMEventDelete.json")

    # WHEN it is handled
    response = invoke(event, lambda_context)

    # THEN it is 405 with Allow, and nothing reached Cloudflare
    assert response["statusCode"] == 405
    assert response["headers"]["Allow"] == "GET, POST"
    assert json.loads(response["body"])["error"]["type"] == "METHOD_NOT_ALLOWED"
    assert len(cf.calls) == 0
    docs = emf_documents(capsys.readouterr().out)
    failed = [d for d in docs if "SyncFailed" in d]
    assert failed and failed[0]["ErrorType"] == "METHOD_NOT_ALLOWED"


def test_scheduled_event_syncs_default_key(aws, cf, lambda_context, monkeypatch):
    monkeypatch.setenv("DEFAULT_KEY_NAME", "maintenance-mode")
    cf.post(BULK_GET_URL, json=bulk_get_reply("maintenance-mode", "off"))

    response = invoke(load_event("scheduledEvent.json"), lambda_context)

    assert response["success"] is True
    assert response["data"]["key_name"] == "maintenance-mode"


def test_scheduled_event_raises_on_retryable_failure(aws, cf, lambda_context, no_sleep):
    # GIVEN Cloudflare is down for longer than the retry budget
    cf.post(BULK_GET_URL, status=503, json=failure(10001, "service unavailable"))

    # WHEN the schedule fires
    import errors

    with pytest.raises(errors.ApiError) as raised:
        invoke(load_event("scheduledEvent.json"), lambda_context)

    # THEN the invocation fails (so Lambda retries and the Errors metric sees it)
    assert raised.value.is_retryable
    assert len(cf.calls) == 3


def test_scheduled_event_returns_document_on_permanent_failure(aws, cf, lambda_context):
    cf.post(BULK_GET_URL, json=bulk_get_reply(DEFAULT_KEY, None))

    response = invoke(load_event("scheduledEvent.json"), lambda_context)

    assert response["success"] is False
    assert response["error"]["type"] == "NOT_FOUND"


def test_missing_key_is_not_found_and_leaves_record_alone(aws, cf, lambda_context):
    # GIVEN a stored record for a key
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "v1"))
    invoke({"key_name": "classic-domain"}, lambda_context)

    # WHEN the key has been deleted in KV and is synced again
    cf.replace(responses.POST, BULK_GET_URL, json=bulk_get_reply("classic-domain", None))
    response = invoke({"key_name": "classic-domain"}, lambda_context)

    # THEN the result is NOT_FOUND, not retryable, and the record is untouched
    assert response["success"] is False
    assert response["error"]["type"] == "NOT_FOUND"
    assert response["error"]["is_retryable"] is False
    assert response["error"]["timestamp"].endswith("Z")
    assert response["statistics"]["success_rate"] == 0.0
    item = stored_item(aws, "classic-domain")
    assert item is not None and item["value"] == "v1"


@pytest.mark.parametrize(
    ("status", "body", "headers", "http_status", "error_type"),
    [
        (404, failure(10009, "get: 'key not found'"), {}, 404, "NOT_FOUND"),
        (401, failure(10000, "Authentication error"), {}, 502, "AUTH_ERROR"),
        (429, failure(10029, "rate limited"), {"Retry-After": "1"}, 503, "RATE_LIMITED"),
        (500, failure(10001, "internal"), {}, 502, "API_ERROR"),
        (400, failure(10026, "bad request"), {}, 502, "API_ERROR"),
    ],
)
def test_function_url_maps_error_types_to_statuses(
    aws, cf, lambda_context, no_sleep, status, body, headers, http_status, error_type
):
    # GIVEN Cloudflare answers every read with this error
    cf.post(BULK_GET_URL, status=status, json=body, headers=headers)
    cf.get(f"{NAMESPACE_URL}/values/classic-domain", status=status, json=body, headers=headers)

    # WHEN a Function URL request arrives
    response = invoke(load_event("lambdaFunctionUrlIAMEvent.json"), lambda_context)

    # THEN the HTTP status follows the error type
    assert response["statusCode"] == http_status
    document = json.loads(response["body"])
    assert document["success"] is False
    assert document["error"]["type"] == error_type
    if http_status == 503:
        assert response["headers"]["Retry-After"] == "1"


def test_namespace_not_found_is_a_configuration_error(aws, cf, lambda_context):
    cf.post(BULK_GET_URL, status=404, json=failure(10013, "namespace not found"))

    response = invoke({"key_name": "x"}, lambda_context)

    assert response["error"]["type"] == "CONFIGURATION_ERROR"
    assert "kv_namespace_id" in response["error"]["message"]


def test_rotated_token_is_picked_up_after_one_401(aws, cf, lambda_context):
    # GIVEN a warm container that cached the old token
    cf.post(BULK_GET_URL, json=bulk_get_reply("k", "v"))
    assert invoke({"key_name": "k"}, lambda_context)["success"] is True

    # AND the token was rotated: Cloudflare rejects the old one, the secret holds the new one
    import boto3

    from tests.unit.conftest import SECRET, SECRET_VALUE

    boto3.client("secretsmanager").put_secret_value(
        SecretId=SECRET, SecretString=json.dumps({**SECRET_VALUE, "api_token": "new-token"})
    )

    def by_token(request):
        if request.headers["Authorization"] == "Bearer new-token":
            return 200, {}, json.dumps(bulk_get_reply("k", "v"))
        return 401, {}, json.dumps(failure(10000, "Authentication error"))

    cf.replace(responses.POST, BULK_GET_URL, json={})  # drop the old stub
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
    cf.post(BULK_GET_URL, status=403, json=failure(10000, "Authentication error"))

    response = invoke({"key_name": "k"}, lambda_context)

    assert response["error"]["type"] == "AUTH_ERROR"
    assert response["error"]["is_retryable"] is False
    assert len(cf.calls) == 2


def test_secret_without_value_is_configuration_error(cf, lambda_context):
    # GIVEN the secret exists (Terraform made it) but nobody put a value yet
    import boto3
    from moto import mock_aws

    from tests.unit.conftest import SECRET

    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name=SECRET)
        response = invoke({}, lambda_context)

    # THEN the operator is told what to do, and nothing reached Cloudflare
    assert response["error"]["type"] == "CONFIGURATION_ERROR"
    assert "put-secret-value" in response["error"]["message"]
    assert len(cf.calls) == 0


def test_missing_table_setting_is_configuration_error(aws, cf, lambda_context, monkeypatch):
    monkeypatch.delenv("DYNAMODB_TABLE_NAME")

    response = invoke({}, lambda_context)

    assert response["error"]["type"] == "CONFIGURATION_ERROR"
    assert "DYNAMODB_TABLE_NAME" in response["error"]["message"]


def test_unexpected_exception_is_internal_error_without_stack_trace(
    aws, cf, lambda_context, monkeypatch
):
    import sync

    def explode(*args, **kwargs):
        raise RuntimeError(f"boom with {TOKEN}")

    monkeypatch.setattr("handler.sync_key", explode)
    assert sync.sync_key is not explode

    response = invoke({}, lambda_context)

    assert response["error"]["type"] == "INTERNAL_ERROR"
    assert "Traceback" not in json.dumps(response)
    assert TOKEN not in json.dumps(response)


def test_logs_carry_key_name_and_never_the_token_or_value(aws, cf, lambda_context, log_stream):
    secret_value = "s3cr3t-flag-value-" + "x" * 40
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", secret_value))

    invoke({"key_name": "classic-domain"}, lambda_context)

    out = log_stream.getvalue()
    log_lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"level"')]
    assert log_lines, "expected structured log lines"
    assert all(line["key_name"] == "classic-domain" for line in log_lines)
    assert all(line["service"] == "kv-sync" for line in log_lines)
    assert TOKEN not in out
    assert secret_value not in out
