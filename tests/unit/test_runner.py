"""The local runner (``python -m local.runner``): arguments, credentials, exit codes.

AWS is moto's in-process ``mock_aws`` and Cloudflare is ``responses``; the run
against moto server and the KV emulator is in ``tests/integration/test_runner.py``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
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
    outcome = runner.run_invocations(
        handler, invocations, 30, progress=lambda d, t, doc: seen.append((d, t, doc["success"]))
    )
    assert outcome.documents == [{"success": True}, {"success": False}]
    assert outcome.complete is True  # single keys always end their run
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


# --------------------------------------------------------------------------- multi-key selectors


def test_multi_key_selectors_and_options() -> None:
    config = runner.parse_args(
        ["--key-names", "a", "b", "--delete-missing", "--follow", "--max-invocations", "5"],
        environ={},
    )
    assert config.key_names == ("a", "b")
    assert config.is_bulk is True
    assert (config.delete_missing, config.follow, config.max_invocations) == (True, True, 5)
    config = runner.parse_args(["--prefix", "flags/", "--cursor", "c1"], environ={})
    assert (config.prefix, config.cursor, config.delete_missing) == ("flags/", "c1", None)
    config = runner.parse_args(["--all", "--no-delete-missing", "--no-progress"], environ={})
    assert (config.all_keys, config.delete_missing, config.progress) == (True, False, False)
    single = runner.parse_args(["--key-name", "k"], environ={})
    assert single.is_bulk is False
    assert (single.key_names, single.prefix, single.all_keys, single.follow) == (
        None,
        None,
        False,
        False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--key-name", "a", "--prefix", "p"], "not allowed with"),
        (["--all", "--key-names", "a"], "not allowed with"),
        (["--cursor", "c"], "--cursor continues"),
        (["--key-name", "a", "--cursor", "c"], "--cursor continues"),
        (["--follow"], "--follow needs"),
        (["--key-name", "a", "--follow"], "--follow needs"),
        (["--all", "--max-invocations", "3"], "only applies with --follow"),
        (["--all", "--follow", "--max-invocations", "0"], "at least 1"),
        (["--key-names"], "expected at least one argument"),
    ],
)
def test_bad_selector_combinations_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        runner.parse_args(argv, environ={})
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cursor_with_more_names_than_one_event_is_rejected(
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = [f"k{i}" for i in range(1001)]
    with pytest.raises(SystemExit):
        runner.parse_args(["--key-names", *names, "--cursor", "c"], environ={})
    assert "at most 1000 names" in capsys.readouterr().err


def test_events_for_each_selector_are_what_the_function_accepts() -> None:
    import events

    cases = {
        ("--all",): {"all": True},
        ("--all", "--cursor", "c", "--delete-missing"): {
            "all": True,
            "cursor": "c",
            "delete_missing": True,
        },
        ("--prefix", "flags/", "--no-delete-missing"): {
            "prefix": "flags/",
            "delete_missing": False,
        },
        ("--key-names", "a", "b", "a"): {"key_names": ["a", "b"]},
        ("--key-name", "k", "--delete-missing"): {"key_name": "k", "delete_missing": True},
        ("--delete-missing",): {"delete_missing": True},
    }
    for argv, expected in cases.items():
        (invocation,) = runner.build_invocations(runner.parse_args(list(argv), environ={}))
        assert invocation.event == expected, argv
        events.parse_event(invocation.event, "default")  # accepted, no ValidationError


def test_more_names_than_one_event_holds_become_several_runs() -> None:
    import events

    assert runner.MAX_KEY_NAMES_PER_EVENT == events.MAX_KEY_NAMES
    names = [f"key-{i:04d}" for i in range(2500)]
    config = runner.parse_args(["--key-names", *names, *names[:10]], environ={})
    invocations = runner.build_invocations(config)
    assert [i.names for i in invocations] == [1000, 1000, 500]
    assert [len(i.event["key_names"]) for i in invocations] == [1000, 1000, 500]
    assert invocations[0].event["key_names"][0] == "key-0000"
    assert invocations[2].event["key_names"][-1] == "key-2499"
    assert invocations[1].label == "1000 named key(s) (part 2 of 3)"


def test_the_function_never_continues_itself_from_a_laptop() -> None:
    environment = runner.function_environment(runner.parse_args(["--all"], environ={}))
    assert environment["SELF_INVOKE_CONTINUATION"] == "false"


# --------------------------------------------------------------------------- --follow


def bulk_doc(
    listed: int,
    cursor: str | None,
    *,
    success: bool = True,
    error: dict[str, Any] | None = None,
    written: int | None = None,
) -> dict[str, Any]:
    statistics = {
        "keys_listed": listed,
        "keys_fetched": listed,
        "records_written": listed if written is None else written,
        "records_unchanged": 0,
        "records_deleted": 0,
        "records_failed": 0,
        "next_cursor": cursor,
        "complete": cursor is None and error is None,
    }
    document: dict[str, Any] = {"success": success and error is None, "statistics": statistics}
    if error is not None:
        document["error"] = error
    else:
        document["data"] = {"next_cursor": cursor, "complete": statistics["complete"]}
    return document


class ScriptedHandler:
    """Answers each call with the next document and records the events."""

    def __init__(self, *documents: dict[str, Any]) -> None:
        self.documents = list(documents)
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        self.events.append(dict(event))
        assert context.get_remaining_time_in_millis() > 0  # a fresh context each call
        return self.documents.pop(0)


def test_follow_passes_each_next_cursor_until_complete() -> None:
    handler = ScriptedHandler(bulk_doc(10, "c1"), bulk_doc(10, "c2"), bulk_doc(5, None))
    seen: list[dict[str, Any]] = []
    outcome = runner.run_invocations(
        handler,
        [runner.Invocation("all", {"all": True, "delete_missing": True})],
        30,
        follow=True,
        on_document=seen.append,
    )
    assert handler.events == [
        {"all": True, "delete_missing": True},
        {"all": True, "delete_missing": True, "cursor": "c1"},
        {"all": True, "delete_missing": True, "cursor": "c2"},
    ]
    assert outcome.complete is True
    assert outcome.stopped is None
    assert len(outcome.documents) == 3
    assert seen == outcome.documents


def test_without_follow_an_unfinished_run_reports_its_cursor() -> None:
    handler = ScriptedHandler(bulk_doc(10, "c1"))
    outcome = runner.run_invocations(handler, [runner.Invocation("all", {"all": True})], 30)
    assert len(handler.events) == 1
    assert (outcome.complete, outcome.cursor, outcome.stopped) == (False, "c1", None)
    assert outcome.unfinished is not None and outcome.unfinished.label == "all"


@pytest.mark.parametrize(
    ("documents", "max_invocations", "reason"),
    [
        (
            [bulk_doc(10, "c1"), bulk_doc(0, "c1", error={"type": "AUTH_ERROR", "message": "no"})],
            None,
            "AUTH_ERROR: no",
        ),
        ([bulk_doc(10, "c1"), bulk_doc(0, "c1")], None, "no page fits"),
        ([bulk_doc(10, "c1"), bulk_doc(10, "c2")], 2, "--max-invocations 2 reached"),
    ],
)
def test_follow_stops_when_it_cannot_go_on(
    documents: list[dict[str, Any]], max_invocations: int | None, reason: str
) -> None:
    handler = ScriptedHandler(*documents)
    outcome = runner.run_invocations(
        handler,
        [runner.Invocation("all", {"all": True})],
        30,
        follow=True,
        max_invocations=max_invocations,
    )
    assert handler.documents == []  # no call after the stop
    assert outcome.complete is False
    assert outcome.stopped is not None and reason in outcome.stopped


def test_follow_stops_when_no_cursor_comes_back() -> None:
    document = bulk_doc(10, None)
    document["statistics"]["complete"] = False
    outcome = runner.run_invocations(
        ScriptedHandler(document), [runner.Invocation("all", {"all": True})], 30, follow=True
    )
    assert outcome.stopped == "the function returned no next_cursor"


def test_follow_runs_each_names_chunk_to_completion() -> None:
    handler = ScriptedHandler(bulk_doc(100, "c1"), bulk_doc(900, None), bulk_doc(5, None))
    invocations = [
        runner.Invocation("part 1", {"key_names": ["a"]}, names=1000),
        runner.Invocation("part 2", {"key_names": ["b"]}, names=5),
    ]
    outcome = runner.run_invocations(handler, invocations, 30, follow=True)
    assert handler.events == [
        {"key_names": ["a"]},
        {"key_names": ["a"], "cursor": "c1"},
        {"key_names": ["b"]},
    ]
    assert outcome.complete is True


def test_an_unfinished_names_chunk_stops_later_chunks_without_follow() -> None:
    handler = ScriptedHandler(bulk_doc(100, "c1"))
    invocations = [
        runner.Invocation("part 1", {"key_names": ["a"]}, names=1000),
        runner.Invocation("part 2", {"key_names": ["b"]}, names=5),
    ]
    outcome = runner.run_invocations(handler, invocations, 30)
    assert len(handler.events) == 1
    assert (outcome.complete, outcome.not_started) == (False, 5)


# --------------------------------------------------------------------------- main with --follow


@pytest.mark.usefixtures("no_cloudflare_env")
def test_main_prints_every_document_and_exits_0_when_the_follow_completes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = ScriptedHandler(bulk_doc(10, "c1"), bulk_doc(3, None))
    monkeypatch.setattr(runner, "load_handler", lambda: handler)
    assert runner.main(["--all", "--follow", "--secret-name", "s", "--no-progress"]) == 0
    captured = capsys.readouterr()
    documents = decode_stream(captured.out)
    assert [d["statistics"]["keys_listed"] for d in documents] == [10, 3]
    assert captured.err == ""  # no progress line, nothing to resume


@pytest.mark.usefixtures("no_cloudflare_env")
def test_main_without_follow_says_how_to_continue(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "load_handler", lambda: ScriptedHandler(bulk_doc(10, "c-42")))
    assert runner.main(["--prefix", "flags/", "--secret-name", "s"]) == 0  # success, paused
    err = capsys.readouterr().err
    assert "the run of prefix 'flags/' is not complete" in err
    assert "--cursor c-42" in err


@pytest.mark.usefixtures("no_cloudflare_env")
def test_main_exits_1_when_a_follow_stops_early(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = ScriptedHandler(bulk_doc(10, "c1"), bulk_doc(10, "c2"))
    monkeypatch.setattr(runner, "load_handler", lambda: handler)
    argv = ["--all", "--follow", "--max-invocations", "2", "--secret-name", "s", "--progress"]
    assert runner.main(argv) == 1
    err = capsys.readouterr().err
    assert "--follow stopped: --max-invocations 2 reached" in err
    assert "--cursor c2" in err
    assert "kv-sync stopped: 2 invocation(s), 20 listed" in err


@pytest.mark.usefixtures("no_cloudflare_env")
def test_interrupt_exits_130_with_the_progress_so_far(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(event: Any, context: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "load_handler", lambda: handler)
    assert runner.main(["--all", "--secret-name", "s", "--progress"]) == 130
    err = capsys.readouterr().err
    assert "kv-sync interrupted: 0 invocation(s)" in err
    assert "kv-sync: interrupted" in err


def decode_stream(text: str) -> list[dict[str, Any]]:
    """The JSON documents printed one after another."""
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


# --------------------------------------------------------------------------- progress line


class Terminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("argv", "tty", "wanted"),
    [
        (["--all"], True, True),
        (["--all"], False, False),
        (["--all", "--progress"], False, True),
        (["--prefix", "p", "--no-progress"], True, False),
        (["--key-names", "a"], True, True),
        (["--key-name", "a", "--progress"], True, False),  # single keys: no progress line
        ([], True, False),
    ],
)
def test_progress_is_for_multi_key_runs_on_a_terminal_unless_forced(
    argv: list[str], tty: bool, wanted: bool
) -> None:
    config = runner.parse_args(argv, environ={})
    assert runner.progress_wanted(config, Terminal(tty)) is wanted


def test_progress_lines_without_a_terminal_add_up_invocations_and_pages() -> None:
    stream, clock = Terminal(False), [0.0]
    line = runner.ProgressLine(stream, redraw=False, clock=lambda: clock[0])
    line.start_invocation()
    clock[0] = 1.0
    line.page(FakeStats(keys_listed=10, keys_fetched=10, records_written=4), None)
    line.invocation_done(bulk_doc(20, "c1", written=8), None)
    line.start_invocation()
    line.page(FakeStats(keys_listed=5, keys_fetched=5, records_deleted=1), None)
    clock[0] = 2.5
    line.finish("done")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("kv-sync listed 10 | fetched 10 written 4 ")
    assert lines[0].endswith("| invocation 1 | 1.0s")
    assert "listed 20 | fetched 20 written 8" in lines[1]
    assert "listed 25 | fetched 25 written 8 unchanged 0 deleted 1" in lines[2]
    assert "invocation 2" in lines[2]
    assert lines[3] == (
        "kv-sync done: 1 invocation(s), 25 listed, 25 fetched, 8 written, 0 unchanged, "
        "1 deleted, 0 failed in 2.5s"
    )
    assert "\r" not in stream.getvalue()


def test_progress_bar_for_named_keys_counts_names_across_runs() -> None:
    stream = Terminal(False)
    line = runner.ProgressLine(stream, total_names=1500, redraw=False, clock=lambda: 0.0)
    line.start_invocation(names_base=0)
    line.page(FakeStats(keys_fetched=100), 100)
    assert "[#.......................] 100/1500 6%" in stream.getvalue()
    line.invocation_done(bulk_doc(1000, None), 1000)
    line.start_invocation(names_base=1000)
    line.page(FakeStats(keys_fetched=500), 500)
    assert (
        stream.getvalue()
        .splitlines()[-1]
        .startswith("kv-sync [########################] 1500/1500 100% | fetched 1500")
    )


def test_progress_on_a_terminal_redraws_in_place_and_throttles() -> None:
    stream, clock = Terminal(True), [0.0]
    line = runner.ProgressLine(
        stream, redraw=True, clock=lambda: clock[0], width=60, min_interval=0.5
    )
    line.start_invocation()
    line.page(FakeStats(keys_listed=1000), None)
    clock[0] = 0.1
    line.page(FakeStats(keys_listed=2000), None)  # too soon: skipped
    assert stream.getvalue().count("\r") == 1
    clock[0] = 1.0
    line.page(FakeStats(keys_listed=3000), None)
    text = stream.getvalue()
    assert text.count("\r") == 2
    drawn = text.split("\r")[-1]
    assert len(drawn) == 59  # cut to the terminal width
    assert "listed 3000" in drawn
    line.finish("done")
    assert stream.getvalue().endswith("\r" + " " * 59 + "\r" + "kv-sync done: 0 invocation(s), "
                                      "3000 listed, 0 fetched, 0 written, 0 unchanged, "
                                      "0 deleted, 0 failed in 1.0s\n")  # fmt: skip


def test_log_lines_clear_the_progress_line_and_bring_it_back() -> None:
    stream = Terminal(True)
    line = runner.ProgressLine(stream, redraw=True, clock=lambda: 0.0, width=200)
    line.start_invocation()
    line.page(FakeStats(keys_listed=7), None)
    logs = runner._AroundProgress(stream, line)
    logs.write('{"level": "WARNING", "message": "Retrying"}\n')
    after = stream.getvalue().split('{"level"')[1]
    assert "\n\rkv-sync" in after  # redrawn below the log line
    before = stream.getvalue().split('{"level"')[0]
    assert before.endswith("\r" + " " * line._shown + "\r")


@dataclass
class FakeStats:
    keys_listed: int = 0
    keys_fetched: int = 0
    records_written: int = 0
    records_unchanged: int = 0
    records_deleted: int = 0
    records_failed: int = 0


def test_page_hook_reports_pages_and_restores_the_function() -> None:
    import bulk

    originals = (bulk._Run.names_page, bulk._Run.listing_page)
    calls: list[tuple[Any, int | None]] = []
    with runner.page_hook(lambda stats, offset: calls.append((stats, offset))) as installed:
        assert installed is True
        assert bulk._Run.names_page is not originals[0]
        run = bulk._Run.__new__(bulk._Run)
        run.stats = bulk.BulkStats(keys_fetched=3)
        # A page of names: the wrapped method runs, then the callback gets the offset.
        result = bulk._Run.names_page(run, (), bulk._Position(offset=7))
        assert result == (bulk._Position(offset=7), True)
    assert calls == [(run.stats, 7)]
    assert (bulk._Run.names_page, bulk._Run.listing_page) == originals


def test_a_failing_progress_callback_never_breaks_the_sync() -> None:
    import bulk

    def boom(stats: Any, offset: int | None) -> None:
        raise RuntimeError("display broke")

    with runner.page_hook(boom):
        run = bulk._Run.__new__(bulk._Run)
        run.stats = bulk.BulkStats()
        assert bulk._Run.names_page(run, (), bulk._Position(offset=2)) == (
            bulk._Position(offset=2),
            True,
        )


# --------------------------------------------------------------------------- real handler, bulk


def test_named_keys_with_the_real_handler_and_a_forced_progress_bar(
    aws: Any,
    cf: responses.RequestsMock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    values = {"a": {"value": "1", "metadata": None}, "b": {"value": "two", "metadata": None}}
    cf.add(
        responses.POST,
        BULK_GET_URL,
        json={"success": True, "errors": [], "messages": [], "result": {"values": values}},
    )
    argv = ["--key-names", "a", "b", "--secret-name", SECRET, "--table", TABLE, "--progress"]
    assert runner.main(argv) == 0
    captured = capsys.readouterr()
    (document,) = decode_stream(captured.out)
    assert document["data"]["selector"] == {"key_names": ["a", "b"]}
    assert document["statistics"]["records_written"] == 2
    assert stored_item(aws, "b") is not None
    progress = captured.err.splitlines()
    assert "[########################] 2/2 100% | fetched 2 written 2" in progress[0]
    assert progress[-1].startswith("kv-sync done: 1 invocation(s), 0 listed, 2 fetched, 2 written")
    assert TOKEN not in captured.out + captured.err
