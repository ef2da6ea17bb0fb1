"""The local runner (``python -m local.runner``): arguments, credentials, exit codes.

AWS is moto's in-process ``mock_aws`` and Cloudflare is ``responses``; the run
against moto server and the KV emulator is in ``tests/integration/test_runner.py``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import responses

from local import runner
from tests.unit.conftest import (
    ACCOUNT_ID,
    BULK_GET_URL,
    NAMESPACE_ID,
    SECRET,
    TABLE,
    TOKEN,
    bulk_get_reply,
    stored_item,
)

ENV_CREDS = {
    "CLOUDFLARE_API_TOKEN": TOKEN,
    "CLOUDFLARE_ACCOUNT_ID": ACCOUNT_ID,
    "CLOUDFLARE_KV_NAMESPACE_ID": NAMESPACE_ID,
    "CLOUDFLARE_KV_NAMESPACE": "flags",
}


@pytest.fixture
def no_cloudflare_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*ENV_CREDS, "SECRETS_MANAGER_SECRET_NAME", "DYNAMODB_TABLE_NAME"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CLOUDFLARE_API_BASE_URL", raising=False)


# --------------------------------------------------------------------------- arguments


def test_defaults_follow_terraform() -> None:
    config = runner.parse_args([], environ={})
    assert config.key_name is None
    assert config.table == "cloudflare-kv-data"
    assert config.secret_name == "cloudflare-kv-credentials"
    assert config.env_credentials is None
    assert config.api_base_url is None
    assert config.timeout_s == 300.0
    assert (config.region, config.profile, config.endpoint_url) == (None, None, None)
    assert config.verbose is False


def test_all_options() -> None:
    config = runner.parse_args(
        [
            "--key-name", "classic-domain", "--secret-name", "s", "--table", "t",
            "--api-base-url", "http://127.0.0.1:1/client/v4", "--timeout", "12.5",
            "--region", "eu-west-1", "--profile", "ops", "--endpoint-url",
            "http://127.0.0.1:2", "--verbose",
        ],
        environ={},
    )  # fmt: skip
    assert config.key_name == "classic-domain"
    assert config.secret_name == "s"
    assert config.table == "t"
    assert config.api_base_url == "http://127.0.0.1:1/client/v4"
    assert config.timeout_s == 12.5
    assert (config.region, config.profile) == ("eu-west-1", "ops")
    assert config.endpoint_url == "http://127.0.0.1:2"
    assert config.verbose is True


def test_defaults_from_the_function_environment() -> None:
    environ = {
        "DYNAMODB_TABLE_NAME": "other-table",
        "CLOUDFLARE_API_BASE_URL": "http://kv.local/client/v4",
        "SECRETS_MANAGER_SECRET_NAME": "other-secret",
    }
    config = runner.parse_args([], environ=environ)
    assert config.table == "other-table"
    assert config.api_base_url == "http://kv.local/client/v4"
    assert config.secret_name == "other-secret"


@pytest.mark.parametrize("timeout", ["0", "-1", "901", "soon"])
def test_bad_timeout_is_a_usage_error(timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(["--timeout", timeout], environ={})
    assert exc.value.code == 2
    assert "--timeout" in capsys.readouterr().err


def test_env_credentials_are_used_without_a_secret() -> None:
    config = runner.parse_args([], environ=ENV_CREDS)
    assert config.secret_name is None
    assert config.env_credentials is not None
    assert json.loads(config.env_credentials) == {
        "api_token": TOKEN,
        "account_id": ACCOUNT_ID,
        "kv_namespace_id": NAMESPACE_ID,
        "kv_namespace": "flags",
    }
    # The token stays out of reprs (tracebacks, debug prints).
    assert TOKEN not in repr(config)


def test_secret_name_wins_over_env_credentials() -> None:
    config = runner.parse_args(["--secret-name", "prod-creds"], environ=ENV_CREDS)
    assert config.secret_name == "prod-creds"
    assert config.env_credentials is None


def test_incomplete_env_credentials_name_the_missing_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT_ID}
    with pytest.raises(SystemExit) as exc:
        runner.parse_args([], environ=environ)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "CLOUDFLARE_KV_NAMESPACE_ID" in err
    assert "CLOUDFLARE_KV_NAMESPACE " in err or err.rstrip().endswith("--secret-name)")
    assert TOKEN not in err


def test_default_event_and_key_event() -> None:
    default = runner.build_invocations(runner.parse_args([], environ={}))
    assert [i.event for i in default] == [{}]
    one = runner.build_invocations(runner.parse_args(["--key-name", "k"], environ={}))
    assert [i.event for i in one] == [{"key_name": "k"}]


# --------------------------------------------------------------------------- pieces


def test_local_context_counts_down() -> None:
    clock = [100.0]
    context = runner.LocalContext(timeout_s=300, clock=lambda: clock[0])
    assert context.get_remaining_time_in_millis() == 300_000
    clock[0] += 299.5
    assert context.get_remaining_time_in_millis() == 500
    clock[0] += 10
    assert context.get_remaining_time_in_millis() == 0
    assert context.aws_request_id != runner.LocalContext().aws_request_id
    assert context.function_name == "cloudflare-data-sync"


def test_run_invocations_reports_progress() -> None:
    seen: list[tuple[int, int, bool]] = []
    calls: list[tuple[Any, Any]] = []

    def handler(event: Any, context: Any) -> dict[str, Any]:
        calls.append((event, context))
        return {"success": event.get("key_name") != "bad"}

    invocations = [
        runner.Invocation("a", {"key_name": "a"}),
        runner.Invocation("b", {"key_name": "bad"}),
    ]
    documents = runner.run_invocations(
        handler, invocations, 30, progress=lambda d, t, doc: seen.append((d, t, doc["success"]))
    )
    assert documents == [{"success": True}, {"success": False}]
    assert seen == [(1, 2, True), (2, 2, False)]
    # A fresh context (request id, deadline) per call.
    assert calls[0][1].aws_request_id != calls[1][1].aws_request_id
    assert calls[0][1].get_remaining_time_in_millis() <= 30_000


def test_patched_environ_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KV_SYNC_A", "old")
    monkeypatch.delenv("KV_SYNC_B", raising=False)
    with runner.patched_environ({"KV_SYNC_A": None, "KV_SYNC_B": "new"}):
        assert "KV_SYNC_A" not in os.environ
        assert os.environ["KV_SYNC_B"] == "new"
    assert os.environ["KV_SYNC_A"] == "old"
    assert "KV_SYNC_B" not in os.environ


# --------------------------------------------------------------------------- exit codes


@pytest.mark.usefixtures("no_cloudflare_env")
@pytest.mark.parametrize(("success", "code"), [(True, 0), (False, 1)])
def test_exit_code_follows_the_document(
    success: bool, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[Any] = []

    def handler(event: Any, context: Any) -> dict[str, Any]:
        events.append(event)
        # The function sees the environment the runner set up.
        assert os.environ["DYNAMODB_TABLE_NAME"] == "t"
        assert os.environ["SECRETS_MANAGER_SECRET_NAME"] == "s"
        return {"success": success, "data": {"key_name": event.get("key_name")}}

    monkeypatch.setattr(runner, "load_handler", lambda: handler)
    assert runner.main(["--key-name", "k", "--table", "t", "--secret-name", "s"]) == code
    assert events == [{"key_name": "k"}]
    out = capsys.readouterr().out
    assert json.loads(out) == {"success": success, "data": {"key_name": "k"}}
    assert "DYNAMODB_TABLE_NAME" not in os.environ  # restored


@pytest.mark.usefixtures("no_cloudflare_env")
def test_no_region_is_reported_before_invoking(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)

    def handler(event: Any, context: Any) -> dict[str, Any]:
        raise AssertionError("must not be invoked")

    monkeypatch.setattr(runner, "load_handler", lambda: handler)
    assert runner.main([]) == 1
    captured = capsys.readouterr()
    assert "No AWS region" in captured.err
    assert captured.out == ""


@pytest.mark.usefixtures("no_cloudflare_env")
def test_unknown_profile_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    assert runner.main(["--profile", "no-such-profile"]) == 1
    assert "no-such-profile" in capsys.readouterr().err


# --------------------------------------------------------------------------- real handler


def _cf_value(cf: responses.RequestsMock, key: str, value: str) -> None:
    cf.add(responses.POST, BULK_GET_URL, json=bulk_get_reply(key, value))


def test_env_credentials_path_never_reads_the_secret(
    aws: Any,
    cf: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import credentials

    # The secret in moto holds a different token: using it would fail the check below.
    secrets = __import__("boto3").client("secretsmanager")
    secrets.put_secret_value(SecretId=SECRET, SecretString="{}")
    for name, value in ENV_CREDS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SECRETS_MANAGER_SECRET_NAME")
    _cf_value(cf, "classic-domain", "classic.example.com")
    original = credentials.load_credentials

    assert runner.main(["--key-name", "classic-domain", "--table", TABLE]) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["success"] is True
    assert document["data"]["record"]["sk"] == "KEY#classic-domain"
    assert cf.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    item = stored_item(aws, "classic-domain")
    assert item is not None
    assert item["value"] == "classic.example.com"
    assert item["namespace_name"] == "flags"
    # The seam is undone: the function reads Secrets Manager again afterwards.
    assert credentials.load_credentials is original


def test_env_credentials_are_validated_like_the_secret(
    aws: Any,
    cf: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in {**ENV_CREDS, "CLOUDFLARE_API_TOKEN": "changeme"}.items():
        monkeypatch.setenv(name, value)
    assert runner.main(["--table", TABLE]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["error"]["type"] == "CONFIGURATION_ERROR"
    assert "api_token" in document["error"]["message"]
    assert "CLOUDFLARE_" in document["error"]["message"]
    assert not cf.calls


def test_secret_path_uses_secrets_manager(
    aws: Any, cf: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    _cf_value(cf, "redirect-all-users-to-essentials", '{"on": true}')
    assert runner.main(["--secret-name", SECRET, "--table", TABLE]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["data"]["key_name"] == "redirect-all-users-to-essentials"
    assert document["data"]["record"]["value_type"] == "json"
    assert cf.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_failure_document_exits_1_and_logs_go_to_stderr(
    aws: Any, cf: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    cf.add(responses.POST, BULK_GET_URL, json=bulk_get_reply("missing", None))
    assert runner.main(["--secret-name", SECRET, "--table", TABLE, "--key-name", "missing"]) == 1
    captured = capsys.readouterr()
    document = json.loads(captured.out)  # stdout holds the document only
    assert document["error"]["type"] == "NOT_FOUND"
    assert "Sync failed" in captured.err  # the warning line, not the INFO ones
    assert "Fetched KV value" not in captured.err
    assert '"_aws"' not in captured.out + captured.err  # metrics off without --verbose
    assert TOKEN not in captured.out + captured.err


def test_verbose_shows_info_logs_and_metrics_on_stderr(
    aws: Any, cf: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    _cf_value(cf, "classic-domain", "classic.example.com")
    argv = ["--secret-name", SECRET, "--table", TABLE, "--key-name", "classic-domain", "-v"]
    assert runner.main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["success"] is True
    assert "Sync finished" in captured.err
    assert '"_aws"' in captured.err
    assert TOKEN not in captured.out + captured.err
