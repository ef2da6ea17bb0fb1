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


# --------------------------------------------------------------------------- multi-key runs


@pytest.fixture
def one_page_per_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten keys a listing page (the API's minimum), and each page uses up the invocation.

    After every listing page the run's deadline budget reads 0, so the function
    returns ``next_cursor`` exactly as it does when the Lambda timeout is near:
    each invocation then syncs one page, deterministically.
    """
    import bulk

    monkeypatch.setattr(bulk, "LIST_PAGE_SIZE", 10)
    original = bulk._Run.listing_page

    def page_then_out_of_time(self: Any, prefix: str, position: Any) -> Any:
        result = original(self, prefix, position)
        self.deadline.budget = lambda: 0.0
        return result

    monkeypatch.setattr(bulk._Run, "listing_page", page_then_out_of_time)


def decode_stream(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def seed(kv_emulator: Any, count: int) -> dict[str, str]:
    values = {f"flags/{i:03d}": f"value {i}" for i in range(count)}
    for key, value in values.items():
        kv_emulator.put(kv_emulator.test_namespace_id, key, value)
    return values


def table_keys(aws: dict[str, Any], namespace_id: str) -> dict[str, str]:
    items = aws["dynamodb"].query(
        TableName=aws["table"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"NAMESPACE#{namespace_id}"}},
    )["Items"]
    return {item["key"]["S"]: item["value"]["S"] for item in items}


@pytest.fixture
def env_credentials(kv_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", kv_emulator.account_id)
    monkeypatch.setenv("CLOUDFLARE_KV_NAMESPACE_ID", kv_emulator.test_namespace_id)
    monkeypatch.setenv("CLOUDFLARE_KV_NAMESPACE", "kv-sync-test")


@pytest.mark.usefixtures("one_page_per_invocation", "env_credentials")
def test_all_follow_completes_over_several_invocations_with_progress(
    aws: dict[str, Any],
    kv_emulator: Any,
    moto_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace_id = kv_emulator.test_namespace_id
    values = seed(kv_emulator, 35)
    common = [
        "--table", aws["table"],
        "--api-base-url", kv_emulator.base_url,
        "--endpoint-url", moto_server_url,
        "--region", "us-east-1",
        "--timeout", "60",
        "--progress",
    ]  # fmt: skip

    # WHEN the whole namespace is synced, following cursors
    code = runner.main(["--all", "--follow", *common])

    # THEN four invocations of one page each completed the run
    captured = capsys.readouterr()
    assert code == 0, captured.err
    documents = decode_stream(captured.out)
    assert [d["statistics"]["keys_listed"] for d in documents] == [10, 10, 10, 5]
    assert [d["statistics"]["complete"] for d in documents] == [False, False, False, True]
    cursors = [d["data"]["next_cursor"] for d in documents]
    assert all(cursors[:3]) and cursors[3] is None
    assert table_keys(aws, namespace_id) == values
    # AND stderr showed the progress after each page and a final line
    progress = captured.err.splitlines()
    assert progress[0].startswith("kv-sync listed 10 | fetched 10 written 10 ")
    assert any("listed 30 | fetched 30 written 30" in line for line in progress)
    assert any("| invocation 4 |" in line for line in progress)
    assert progress[-1].startswith(
        "kv-sync done: 4 invocation(s), 35 listed, 35 fetched, 35 written, 0 unchanged, "
        "0 deleted, 0 failed in "
    )
    assert TOKEN not in captured.out + captured.err

    # WHEN keys change and vanish, and a prefix run deletes missing records
    for gone in ("flags/003", "flags/017", "flags/034"):
        kv_emulator.delete(namespace_id, gone)
        del values[gone]
    kv_emulator.put(namespace_id, "flags/020", "changed")
    values["flags/020"] = "changed"
    code = runner.main(["--prefix", "flags/", "--delete-missing", "--follow", *common])

    # THEN the table equals KV again
    captured = capsys.readouterr()
    assert code == 0, captured.err
    documents = decode_stream(captured.out)
    assert len(documents) == 4
    assert table_keys(aws, namespace_id) == values
    assert captured.err.splitlines()[-1].startswith(
        "kv-sync done: 4 invocation(s), 32 listed, 32 fetched, 1 written, 31 unchanged, "
        "3 deleted, 0 failed in "
    )


@pytest.mark.usefixtures("one_page_per_invocation", "env_credentials")
def test_without_follow_the_printed_cursor_continues_the_run(
    aws: dict[str, Any],
    kv_emulator: Any,
    moto_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = seed(kv_emulator, 15)
    common = [
        "--table", aws["table"],
        "--api-base-url", kv_emulator.base_url,
        "--endpoint-url", moto_server_url,
    ]  # fmt: skip

    assert runner.main(["--all", *common]) == 0  # a success, not complete
    captured = capsys.readouterr()
    (first,) = decode_stream(captured.out)
    cursor = first["data"]["next_cursor"]
    assert f"continue with --cursor {cursor} (same selector)" in captured.err
    assert "kv-sync " not in captured.err.replace("kv-sync: ", "")  # stderr is no terminal

    assert runner.main(["--all", "--cursor", cursor, *common]) == 0
    (second,) = decode_stream(capsys.readouterr().out)
    assert second["statistics"]["complete"] is True
    assert table_keys(aws, kv_emulator.test_namespace_id) == values


@pytest.mark.usefixtures("env_credentials")
def test_named_keys_report_missing_ones_and_draw_a_bar(
    aws: dict[str, Any],
    kv_emulator: Any,
    moto_server_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed(kv_emulator, 2)
    argv = [
        "--key-names", "flags/000", "flags/001", "flags/404",
        "--table", aws["table"],
        "--api-base-url", kv_emulator.base_url,
        "--endpoint-url", moto_server_url,
        "--progress",
    ]  # fmt: skip
    assert runner.main(argv) == 1  # one key failed
    captured = capsys.readouterr()
    (document,) = decode_stream(captured.out)
    assert document["data"]["failed_keys"][0]["key"] == "flags/404"
    assert document["data"]["failed_keys"][0]["type"] == "NOT_FOUND"
    assert "[########################] 3/3 100% | fetched 2 written 2" in captured.err
    assert captured.err.splitlines()[-1].startswith(
        "kv-sync done: 1 invocation(s), 0 listed, 2 fetched, 2 written, 0 unchanged, "
        "0 deleted, 1 failed"
    )
