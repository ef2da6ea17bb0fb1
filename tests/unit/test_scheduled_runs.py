"""Scheduled invocations (EventBridge "Scheduled Event"): a failure raises, whatever it is.

Nobody reads a scheduled run's reply, so a run that fails raises: Lambda's Errors
metric, its retries and the failure queue see it. A multi-key run that completes
with some keys failed does not raise: those keys are counted (``RecordsFailed``)
and listed. Direct and Function URL callers get documents either way.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kv_sync.errors import ApiError, NotFoundError, SyncError
from local.lambda_context import LambdaContext
from tests.support.cloudflare import BULK_GET_URL, SECRET, bulk_get_reply, failure, stored_item
from tests.support.function import load_event, scheduled
from tests.support.sync_runs import (
    emf_documents,
    failed_metrics,
    hold_lease,
    invoke,
    metric_value,
    seed,
    store_records,
    values,
)

DEFAULT_KEY = "redirect-all-users-to-essentials"


def function_url(fields: dict[str, Any]) -> dict[str, Any]:
    """The sample Function URL POST carrying ``fields``."""
    event = load_event("lambdaFunctionUrlIAMEvent.json")
    event["body"] = json.dumps(fields)
    return event


# ------------------------------------------------------------------ single key


def test_scheduled_event_syncs_default_key(aws, cf, monkeypatch):
    # GIVEN a deployment whose default key is maintenance-mode
    monkeypatch.setenv("DEFAULT_KEY_NAME", "maintenance-mode")
    cf.post(BULK_GET_URL, json=bulk_get_reply("maintenance-mode", "off"))

    # WHEN the schedule fires
    response = invoke(scheduled())

    # THEN that key is synced
    assert response["success"] is True
    assert response["data"]["key_name"] == "maintenance-mode"
    assert stored_item(aws, "maintenance-mode") is not None


def test_scheduled_event_detail_selects_the_key(aws, cf):
    # GIVEN a schedule whose constant input names a key in "detail"
    cf.post(BULK_GET_URL, json=bulk_get_reply("classic-domain", "x"))

    # WHEN it fires
    response = invoke(scheduled({"key_name": "classic-domain"}))

    # THEN that key is synced
    assert response["data"]["key_name"] == "classic-domain"


def test_scheduled_event_raises_on_retryable_failure(aws, cf, monkeypatch):
    # GIVEN Cloudflare is down for longer than the retry budget (two attempts)
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    cf.post(BULK_GET_URL, status=503, json=failure(10001, "service unavailable"))

    # WHEN the schedule fires
    with pytest.raises(ApiError) as raised:
        invoke(scheduled())

    # THEN the invocation fails (so Lambda retries and the Errors metric sees it)
    assert raised.value.is_retryable
    assert len(cf.calls) == 2


def test_scheduled_event_raises_on_permanent_failure(aws, cf, capsys):
    # GIVEN the default key does not exist
    cf.post(BULK_GET_URL, json=bulk_get_reply(DEFAULT_KEY, None))

    # WHEN the schedule fires
    with pytest.raises(NotFoundError) as raised:
        invoke(scheduled())

    # THEN the invocation fails too, though retrying cannot help: the Errors metric
    # and the failure queue are where a scheduled run's failures are seen
    assert raised.value.is_retryable is False
    assert f"Key '{DEFAULT_KEY}' does not exist" in raised.value.message
    assert failed_metrics(emf_documents(capsys.readouterr().out)) == ["NOT_FOUND"]


def test_scheduled_event_with_an_empty_secret_raises_a_configuration_error(cf):
    # GIVEN the secret exists (Terraform made it) but nobody put a value yet
    with mock_aws():
        boto3.client("secretsmanager").create_secret(Name=SECRET)

        # WHEN the schedule fires
        with pytest.raises(SyncError) as raised:
            invoke(scheduled())

    # THEN the invocation fails with CONFIGURATION_ERROR, before reaching Cloudflare
    assert raised.value.type == "CONFIGURATION_ERROR"
    assert raised.value.is_retryable is False
    assert len(cf.calls) == 0


def test_scheduled_event_with_bad_input_raises_a_validation_error(aws, cf):
    # GIVEN a schedule whose constant input is malformed
    # WHEN it fires
    with pytest.raises(SyncError) as raised:
        invoke(scheduled({"key_name": "..", "delete_missing": True}))

    # THEN the invocation fails with VALIDATION_ERROR, before reaching Cloudflare
    assert raised.value.type == "VALIDATION_ERROR"
    assert len(cf.calls) == 0


# ------------------------------------------------------------------- multi-key


def test_a_scheduled_multi_key_run_raises_on_a_retryable_failure(aws, kv, monkeypatch):
    # GIVEN a schedule whose detail selects a prefix, and Cloudflare's listing down
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "1")
    kv.fail_after("list", 0, status=503)

    # WHEN it fires
    # THEN the invocation fails, so Lambda's retries and failure queue see it
    with pytest.raises(ApiError) as raised:
        invoke(scheduled({"prefix": "flags/"}))
    assert raised.value.is_retryable is True


def test_a_scheduled_run_refused_by_the_deletion_guard_raises(aws, kv):
    # GIVEN a schedule syncing the namespace with delete_missing, and a listing that
    # would delete 3 of the 4 stored records
    store_records(aws, list("abcd"))
    seed(kv, ["a"])

    # WHEN it fires
    with pytest.raises(SyncError) as raised:
        invoke(scheduled({"all": True, "delete_missing": True}))

    # THEN the invocation fails with DELETION_REFUSED, and nothing was deleted
    assert raised.value.type == "DELETION_REFUSED"
    assert raised.value.is_retryable is False
    assert sorted(values(aws)) == list("abcd")


def test_a_scheduled_run_meeting_another_run_raises_a_retryable_conflict(aws, kv):
    # GIVEN another multi-key run holding the namespace's lease for ten minutes
    seed(kv, ["a"])
    hold_lease(aws, run_id="other", started_at="2026-01-02T03:04:05.000006Z",
               expires_at=time.time() + 600)  # fmt: skip

    # WHEN the schedule fires
    with pytest.raises(SyncError) as raised:
        invoke(scheduled({"all": True}))

    # THEN the invocation fails with CONFLICT, which Lambda's retries may get past
    assert raised.value.type == "CONFLICT"
    assert raised.value.is_retryable is True
    assert values(aws) == {}


def test_a_scheduled_multi_key_run_with_a_key_too_large_returns(aws, kv, capsys):
    # GIVEN two ordinary keys and one value that cannot fit a DynamoDB item
    seed(kv, ["a", "b"])
    kv.put("huge", random.Random(3).randbytes(450_000))

    # WHEN a schedule syncing the namespace fires
    reply = invoke(scheduled({"all": True}))

    # THEN the run completed, so nothing is raised: the others are stored, and the
    # failed key is listed and counted for the RecordsFailed alarm
    assert reply["success"] is False
    assert reply["data"]["complete"] is True
    assert [(f["key"], f["type"]) for f in reply["data"]["failed_keys"]] == [
        ("huge", "VALUE_TOO_LARGE")
    ]
    assert sorted(values(aws)) == ["a", "b"]
    docs = emf_documents(capsys.readouterr().out)
    assert metric_value(docs, "RecordsFailed") == 1
    assert metric_value(docs, "RecordsWritten") == 2
    assert failed_metrics(docs) == ["VALUE_TOO_LARGE"]


def test_a_scheduled_multi_key_run_returns_its_document_on_partial_failure(aws, kv):
    # GIVEN a schedule naming a key that does not exist
    seed(kv, ["a"])

    # WHEN it fires
    reply = invoke(scheduled({"key_names": ["a", "gone"]}))

    # THEN the per-key failure is in the document; nothing is raised
    assert reply["success"] is False
    assert reply["statistics"]["records_failed"] == 1


# ------------------------------------------------------ other triggers still reply


@pytest.mark.parametrize(
    ("fields", "error_type", "status"),
    [
        ({"key_name": ".."}, "VALIDATION_ERROR", 400),
        ({"all": True, "delete_missing": True}, "DELETION_REFUSED", 409),
        ({"key_name": "gone"}, "NOT_FOUND", 404),
    ],
    ids=["validation", "deletion-refused", "not-found"],
)
def test_direct_and_function_url_callers_get_the_failure_as_a_reply(
    aws, kv, fields, error_type, status
):
    # GIVEN records the namespace no longer holds, and a request that fails
    store_records(aws, list("abcd"))
    seed(kv, ["a"])

    # WHEN it is sent by direct invocation and through the Function URL
    document = invoke(fields)
    response = invoke(function_url(fields), LambdaContext())

    # THEN neither raises: the direct caller gets the error document, the Function
    # URL caller its HTTP status and the same document
    assert document["success"] is False
    assert document["error"]["type"] == error_type
    assert response["statusCode"] == status
    assert json.loads(response["body"])["error"]["type"] == error_type
