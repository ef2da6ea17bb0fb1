"""The local runner against moto server (AWS) and the KV emulator (Cloudflare), over sockets.

Each test runs ``python -m local.runner``'s ``main`` in this process with the flags
an operator would pass, then reads the table. To make a run take several
invocations whatever the machine's speed, ``one_page_per_invocation`` raises the
time the engine wants left before it starts another page above the invocation's
timeout: each invocation then syncs its first page and returns ``next_cursor``,
as it does near the Lambda deadline.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import boto3
import pytest

from local import runner
from local.aws_setup import TIMEOUT_SECONDS
from tests.support.runner import documents
from tests.support.stack import TOKEN
from tests.support.table import snapshot

if TYPE_CHECKING:
    from tests.support.stack import Stack


def runner_args(stack: Stack) -> list[str]:
    """Where the stack is, as flags (the runner must not rely on the test's environment)."""
    return [
        "--table", stack.table,
        "--api-base-url", stack.emulator.base_url,
        "--endpoint-url", stack.moto_url,
        "--region", "us-east-1",
    ]  # fmt: skip


def seed(stack: Stack, count: int) -> dict[str, bytes]:
    """Put ``flags/000`` ... into KV; returns the values by key."""
    values = {f"flags/{i:03d}": f"value {i}".encode() for i in range(count)}
    for key, value in values.items():
        stack.emulator.put(stack.namespace_id, key, value)
    return values


@pytest.fixture
def env_credentials(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLOUDFLARE_* credentials of the stack's namespace; the secret holds no JSON."""
    stack.put_raw_secret("not the credentials")  # reading it would fail the run
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    monkeypatch.setenv("CLOUDFLARE_ACCOUNT_ID", stack.emulator.account_id)
    monkeypatch.setenv("CLOUDFLARE_KV_NAMESPACE_ID", stack.namespace_id)
    monkeypatch.setenv("CLOUDFLARE_KV_NAMESPACE", "kv-sync-test")


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 10 keys (Cloudflare's minimum listing page), so that a few keys make pages."""
    monkeypatch.setattr("kv_sync.pages.LIST_PAGE_SIZE", 10)
    monkeypatch.setattr("kv_sync.pages.NAMES_PAGE_SIZE", 10)


@pytest.fixture
def one_page_per_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """No invocation has the time the engine wants for a second page."""
    monkeypatch.setattr("kv_sync.engine.MIN_PAGE_SECONDS", 10 * TIMEOUT_SECONDS)


# --------------------------------------------------------------------------- one key


def test_key_name_with_the_secret_then_an_unchanged_resync(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a key in KV and its credentials in the stack's secret
    stack.emulator.put(stack.namespace_id, "classic-domain", "classic.example.com")
    argv = ["--key-name", "classic-domain", "--secret-name", stack.secret, *runner_args(stack)]

    # WHEN the runner syncs it
    code = runner.main(argv)

    # THEN the record is stored and the document says the value changed
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (document,) = documents(captured.out)
    assert document["data"]["record"]["changed"] is True
    assert document["statistics"]["dynamodb_writes"] == 1
    assert 0 < document["data"]["lambda"]["remaining_time_ms"] <= 300_000
    stored = stack.item("classic-domain")
    assert stored is not None
    assert stored["value"] == "classic.example.com"
    assert TOKEN not in captured.out + captured.err

    # WHEN it runs again with KV unchanged
    assert runner.main(argv) == 0

    # THEN nothing is written: "changed": false, and the record keeps its synced_at
    (again,) = documents(capsys.readouterr().out)
    assert again["data"]["message"] == "Synced 'classic-domain': unchanged"
    assert again["data"]["record"]["changed"] is False
    assert again["statistics"]["dynamodb_writes"] == 0
    assert stack.item("classic-domain") == stored


@pytest.mark.usefixtures("env_credentials")
def test_env_credentials_sync_without_reading_the_secret(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a binary value with metadata, and CLOUDFLARE_* credentials (the secret is junk)
    stack.emulator.put(stack.namespace_id, "logo", b"\xff\x00binary", metadata={"v": 1})

    # WHEN the runner syncs it without --secret-name
    code = runner.main(["--key-name", "logo", *runner_args(stack)])

    # THEN the function used the variables, and stored the bytes
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert documents(captured.out)[0]["data"]["record"]["value_type"] == "binary"
    stored = stack.item("logo")
    assert stored is not None
    assert bytes(stored["value"].value) == b"\xff\x00binary"
    assert stored["namespace_name"] == "kv-sync-test"

    # AND a key KV does not have gives the NOT_FOUND document and exit status 1
    assert runner.main(["--key-name", "missing", *runner_args(stack)]) == 1
    assert documents(capsys.readouterr().out)[0]["error"]["type"] == "NOT_FOUND"


@pytest.mark.usefixtures("env_credentials")
def test_env_credentials_are_validated_like_the_secret(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a token variable still holding a template placeholder
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "changeme")
    stack.emulator.reset_stats()

    # WHEN the runner syncs a key
    code = runner.main(["--key-name", "classic-domain", *runner_args(stack)])

    # THEN the function's own validation rejects it, naming the field and the variables
    assert code == 1
    error = documents(capsys.readouterr().out)[0]["error"]
    assert error["type"] == "CONFIGURATION_ERROR"
    assert "api_token" in error["message"]
    assert "CLOUDFLARE_" in error["message"]
    assert stack.emulator.requests == []  # Cloudflare was never called


@pytest.mark.usefixtures("env_credentials")
def test_the_runner_patches_nothing_and_leaves_the_function_as_it_found_it(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kv_sync import credentials, engine
    from kv_sync.observability import logger

    # GIVEN the function's modules as imported
    before = {module: dict(vars(module)) for module in (credentials, engine)}
    session = boto3.DEFAULT_SESSION
    seed(stack, 3)

    # WHEN the runner syncs with env credentials and a progress line
    assert runner.main(["--all", "--progress", *runner_args(stack)]) == 0
    capsys.readouterr()

    # THEN every module attribute is the very object it was before
    for module, attributes in before.items():
        after = vars(module)
        assert set(after) == set(attributes), module.__name__
        changed = [name for name, value in attributes.items() if after[name] is not value]
        assert changed == [], module.__name__
    assert boto3.DEFAULT_SESSION is session
    # AND the function reads Secrets Manager again and draws no progress line
    monkeypatch.setattr(logger.registered_handler, "stream", io.StringIO())
    stack.put_secret(TOKEN)
    stack.emulator.put(stack.namespace_id, "flags/000", "new value")
    reply = stack.invoke({"key_name": "flags/000"})
    assert reply["data"]["record"]["changed"] is True
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- multi-key runs


@pytest.mark.usefixtures("env_credentials", "small_pages", "one_page_per_invocation")
def test_all_follow_runs_invocation_after_invocation_with_progress(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 35 keys: four listing pages of 10
    values = seed(stack, 35)
    argv = [*runner_args(stack), "--progress"]

    # WHEN the whole namespace is synced, following cursors
    code = runner.main(["--all", "--follow", *argv])

    # THEN four invocations of one page each completed the run
    captured = capsys.readouterr()
    assert code == 0, captured.err
    printed = documents(captured.out)
    assert [d["statistics"]["keys_listed"] for d in printed] == [10, 10, 10, 5]
    assert [d["data"]["complete"] for d in printed] == [False, False, False, True]
    assert stack.values() == values
    # AND stderr showed progress after every page, and a summary
    progress = captured.err.splitlines()
    assert progress[0].startswith(
        "kv-sync listed 10 | fetched 10 written 10 unchanged 0 deleted 0 failed 0 | invocation 1 |"
    )
    assert any(line.startswith("kv-sync listed 30 | fetched 30 ") for line in progress)
    assert any("| invocation 4 |" in line for line in progress)
    assert progress[-1].startswith(
        "kv-sync done: 4 invocation(s), 35 listed, 35 fetched, 35 written, 0 unchanged, "
        "0 deleted, 0 failed in "
    )

    # WHEN keys vanish and one changes, and a prefix run deletes missing records
    for gone in ("flags/003", "flags/017", "flags/034"):
        stack.emulator.delete(stack.namespace_id, gone)
        del values[gone]
    stack.emulator.put(stack.namespace_id, "flags/020", "changed")
    values["flags/020"] = b"changed"
    code = runner.main(["--prefix", "flags/", "--delete-missing", "--follow", *argv])

    # THEN the table equals KV again, with writes only for what changed
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(documents(captured.out)) == 4
    assert stack.values() == values
    assert captured.err.splitlines()[-1].startswith(
        "kv-sync done: 4 invocation(s), 32 listed, 32 fetched, 1 written, 31 unchanged, "
        "3 deleted, 0 failed in "
    )


@pytest.mark.usefixtures("env_credentials", "small_pages", "one_page_per_invocation")
def test_without_follow_the_printed_cursor_continues_the_run(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 15 keys: two listing pages
    values = seed(stack, 15)
    argv = runner_args(stack)

    # WHEN one invocation runs (stderr is no terminal: no progress line)
    assert runner.main(["--all", *argv]) == 0  # a success, not complete

    # THEN stderr says how to continue
    captured = capsys.readouterr()
    (first,) = documents(captured.out)
    cursor = first["data"]["next_cursor"]
    assert first["data"]["complete"] is False
    assert captured.err == (
        "kv-sync: the run of the whole namespace is not complete; "
        f"continue with --cursor {cursor} (same selector), or use --follow\n"
    )

    # WHEN the run continues from that cursor
    assert runner.main(["--all", "--cursor", cursor, *argv]) == 0

    # THEN it completes, and the table holds every key
    (second,) = documents(capsys.readouterr().out)
    assert second["data"]["complete"] is True
    assert second["statistics"]["keys_listed"] == 5
    assert stack.values() == values


@pytest.mark.usefixtures("env_credentials", "small_pages", "one_page_per_invocation")
def test_key_names_follow_pages_of_names_with_a_bar_and_report_missing_keys(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN pages of 10 names, 24 keys in KV and a name KV does not have
    values = seed(stack, 24)
    names = [*values, "flags/404"]

    # WHEN they are synced by name, one page of names per invocation
    argv = ["--key-names", *names, "--follow", "--progress", *runner_args(stack)]
    code = runner.main(argv)

    # THEN three invocations ran (10, 10 and 5 names), and the missing key failed the run
    captured = capsys.readouterr()
    assert code == 1
    printed = documents(captured.out)
    assert [d["statistics"]["keys_fetched"] for d in printed] == [10, 10, 4]
    assert [d["success"] for d in printed] == [True, True, False]
    assert printed[-1]["data"]["failed_keys"] == [
        {
            "key": "flags/404",
            "type": "NOT_FOUND",
            "message": "Key 'flags/404' does not exist in the KV namespace",
        }
    ]
    assert stack.values() == values
    # AND the bar counted the names
    progress = captured.err.splitlines()
    assert progress[0].startswith("kv-sync [#########...............] 10/25 40% | fetched 10 ")
    assert progress[-2].startswith("kv-sync [########################] 25/25 100% | ")
    assert progress[-1].startswith(
        "kv-sync done: 3 invocation(s), 0 listed, 24 fetched, 24 written, 0 unchanged, "
        "0 deleted, 1 failed in "
    )


@pytest.mark.usefixtures("env_credentials")
def test_more_names_than_one_event_takes_run_as_several_runs(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 1,001 names: 1,000 KV does not have, then one it has
    stack.emulator.put(stack.namespace_id, "present", "here")
    names = [f"absent/{i:04d}" for i in range(1000)] + ["present"]

    # WHEN they are synced by name
    code = runner.main(["--key-names", *names, *runner_args(stack)])

    # THEN two runs ran, the function's limit of 1,000 names each
    assert code == 1  # the absent keys failed
    first, second = documents(capsys.readouterr().out)
    assert len(first["data"]["selector"]["key_names"]) == 1000
    assert first["statistics"]["records_failed"] == 1000
    assert second["data"]["selector"] == {"key_names": ["present"]}
    assert second["success"] is True
    assert stack.values() == {"present": b"here"}


@pytest.mark.usefixtures("env_credentials", "small_pages", "one_page_per_invocation")
def test_dry_run_follows_the_run_and_writes_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN 15 synced keys (two listing pages), then one changed and one gone from KV
    seed(stack, 15)
    argv = runner_args(stack)
    assert runner.main(["--all", "--follow", *argv]) == 0
    stack.emulator.put(stack.namespace_id, "flags/004", "changed")
    stack.emulator.delete(stack.namespace_id, "flags/012")
    capsys.readouterr()
    before = snapshot(stack)

    # WHEN the runner dry-runs the namespace with --delete-missing, following cursors
    code = runner.main(["--all", "--delete-missing", "--dry-run", "--follow", *argv])

    # THEN it printed each invocation's dry-run document, and the table is unchanged
    captured = capsys.readouterr()
    assert code == 0, captured.err
    dry = documents(captured.out)
    assert [d["data"]["dry_run"] for d in dry] == [True, True]
    assert all(d["data"]["message"].startswith("Dry run, nothing written") for d in dry)
    assert dry[0]["data"]["sample"]["written"] == ["flags/004"]
    assert dry[-1]["data"]["sample"]["deleted"] == ["flags/012"]
    assert snapshot(stack) == before

    # AND the real run then does what the dry run said
    assert runner.main(["--all", "--delete-missing", "--follow", *argv]) == 0
    real = documents(capsys.readouterr().out)
    for field in ("records_written", "records_unchanged", "records_deleted"):
        assert [d["statistics"][field] for d in real] == [d["statistics"][field] for d in dry]
    assert "flags/012" not in stack.values()


@pytest.mark.usefixtures("env_credentials")
def test_dry_run_of_one_key_writes_nothing(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a key in KV, never synced
    stack.emulator.put(stack.namespace_id, "classic-domain", "classic.example.com")
    argv = ["--key-name", "classic-domain", *runner_args(stack)]

    # WHEN the runner dry-runs it
    code = runner.main([*argv, "--dry-run"])

    # THEN the document says it would be stored, and nothing was
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (document,) = documents(captured.out)
    assert document["data"]["message"] == (
        "Dry run: 'classic-domain' would be stored; nothing was written"
    )
    assert document["data"]["dry_run"] is True
    assert stack.item("classic-domain") is None


@pytest.mark.usefixtures("env_credentials")
def test_verbose_shows_the_function_logs_and_metrics_on_stderr_only(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a key
    stack.emulator.put(stack.namespace_id, "classic-domain", "classic.example.com")
    argv = ["--key-name", "classic-domain", *runner_args(stack)]

    # WHEN the runner runs without, then with --verbose
    assert runner.main(argv) == 0
    quiet = capsys.readouterr()
    assert runner.main([*argv, "--verbose"]) == 0
    verbose = capsys.readouterr()

    # THEN stdout holds only the document either way
    assert len(documents(quiet.out)) == len(documents(verbose.out)) == 1
    # AND only --verbose shows the INFO log lines and the EMF metrics, on stderr
    assert quiet.err == ""
    assert '"message":"Sync finished"' in verbose.err
    assert '"_aws"' in verbose.err
    assert TOKEN not in verbose.out + verbose.err


@pytest.mark.usefixtures("env_credentials")
def test_failure_warnings_reach_stderr_without_verbose(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEN a key KV does not have is synced
    assert runner.main(["--key-name", "missing", *runner_args(stack)]) == 1

    # THEN the warning line is on stderr, the document alone on stdout
    captured = capsys.readouterr()
    assert documents(captured.out)[0]["error"]["type"] == "NOT_FOUND"
    assert '"message":"Sync failed"' in captured.err
    assert '"_aws"' not in captured.out + captured.err
