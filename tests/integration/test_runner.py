"""The local runner over real sockets: moto server for AWS, the KV emulator for Cloudflare."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer

from local import runner
from local.aws_setup import create_secret, create_table, put_credentials

TOKEN = "test-token"


@pytest.fixture
def aws(moto_server_url: str) -> dict[str, Any]:
    """A fresh table and secret, named uniquely: moto server is shared by the session."""
    suffix = uuid.uuid4().hex[:8]
    table, secret = f"kv-runner-{suffix}", f"kv-runner-creds-{suffix}"
    dynamodb = boto3.client("dynamodb", endpoint_url=moto_server_url, region_name="us-east-1")
    secrets = boto3.client("secretsmanager", endpoint_url=moto_server_url, region_name="us-east-1")
    create_table(dynamodb, table)
    create_secret(secrets, secret)
    return {"dynamodb": dynamodb, "secrets": secrets, "table": table, "secret": secret}


def stored(aws: dict[str, Any], namespace_id: str, key: str) -> dict[str, Any] | None:
    item = (
        aws["dynamodb"]
        .get_item(
            TableName=aws["table"],
            Key={"pk": {"S": f"NAMESPACE#{namespace_id}"}, "sk": {"S": f"KEY#{key}"}},
        )
        .get("Item")
    )
    if item is None:
        return None
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in item.items()}


def test_table_matches_terraform(aws: dict[str, Any]) -> None:
    dynamodb = aws["dynamodb"]
    table = dynamodb.describe_table(TableName=aws["table"])["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        ("pk", "HASH"),
        ("sk", "RANGE"),
    }
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        ("pk", "S"),
        ("sk", "S"),
    }
    ttl = dynamodb.describe_time_to_live(TableName=aws["table"])["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == ("ttl", "ENABLED")


def test_runner_with_secret_against_emulators(
    aws: dict[str, Any],
    kv_emulator: Any,
    moto_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace_id = kv_emulator.test_namespace_id
    kv_emulator.put(namespace_id, "classic-domain", "classic.example.com")
    put_credentials(
        aws["secrets"],
        {
            "api_token": TOKEN,
            "account_id": kv_emulator.account_id,
            "kv_namespace_id": namespace_id,
            "kv_namespace": "kv-sync-test",
        },
        aws["secret"],
    )
    for name in runner.CLOUDFLARE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)

    code = runner.main(
        [
            "--key-name", "classic-domain",
            "--secret-name", aws["secret"],
            "--table", aws["table"],
            "--api-base-url", kv_emulator.base_url,
            "--endpoint-url", moto_server_url,
            "--region", "us-east-1",
            "--timeout", "60",
        ]
    )  # fmt: skip

    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    document = json.loads(captured.out)
    assert document["success"] is True
    assert document["data"]["record"]["pk"] == f"NAMESPACE#{namespace_id}"
    assert document["data"]["lambda"]["remaining_time_ms"] <= 60_000
    item = stored(aws, namespace_id, "classic-domain")
    assert item is not None
    assert item["value"] == "classic.example.com"
    assert item["namespace_name"] == "kv-sync-test"
    assert TOKEN not in captured.out + captured.err


def test_runner_with_env_credentials_against_emulators(
    aws: dict[str, Any],
    kv_emulator: Any,
    moto_server_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace_id = kv_emulator.test_namespace_id
    kv_emulator.put(namespace_id, "flag", b"\xff\x00binary", metadata={"v": 1})
    # The secret stays empty: the env path must not read it.
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", kv_emulator.account_id)
    monkeypatch.setenv("CLOUDFLARE_KV_NAMESPACE_ID", namespace_id)
    monkeypatch.setenv("CLOUDFLARE_KV_NAMESPACE", "kv-sync-test")

    argv = [
        "--key-name", "flag",
        "--table", aws["table"],
        "--api-base-url", kv_emulator.base_url,
        "--endpoint-url", moto_server_url,
    ]  # fmt: skip
    assert runner.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["data"]["record"]["value_type"] == "binary"
    item = stored(aws, namespace_id, "flag")
    assert item is not None
    assert bytes(item["value"].value) == b"\xff\x00binary"

    # A missing key: the failure document and exit status 1.
    assert runner.main([*argv[:1], "missing", *argv[2:]]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["type"] == "NOT_FOUND"
