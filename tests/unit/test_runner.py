"""The local runner (``python -m local.runner``): arguments, events, credentials, progress, exit.

The function is a scripted stand-in here (``runner.run(..., handler=...)``), so
that the runner's own decisions are tested; the real handler against moto server
and the KV emulator is in ``tests/integration/test_runner.py``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import pytest

from kv_sync import credentials
from kv_sync.errors import ConfigurationError
from kv_sync.model import SyncStats
from kv_sync.settings import Settings
from local import progress, runner
from tests.support.cloudflare import ACCOUNT_ID, NAMESPACE_ID, NAMESPACE_NAME, TOKEN
from tests.support.runner import documents

ENV_CREDENTIALS = {
    "CLOUDFLARE_API_TOKEN": TOKEN,
    "CLOUDFLARE_ACCOUNT_ID": ACCOUNT_ID,
    "CLOUDFLARE_KV_NAMESPACE_ID": NAMESPACE_ID,
    "CLOUDFLARE_KV_NAMESPACE": NAMESPACE_NAME,
}


class Stream(io.StringIO):
    """stderr that is, or is not, a terminal."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class ScriptedFunction:
    """Answers each invocation with the next document; records events and contexts."""

    def __init__(self, *replies: dict[str, Any] | BaseException) -> None:
        self.replies = list(replies)
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.environments: list[dict[str, str]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        self.contexts.append(context)
        self.environments.append(dict(os.environ))
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply


def multi_key(listed: int, cursor: str | None, *, failed: int = 0) -> dict[str, Any]:
    """A multi-key document as the function returns it (the fields the runner reads)."""
    statistics = {
        "keys_listed": listed,
        "keys_fetched": listed,
        "records_written": listed - failed,
        "records_unchanged": 0,
        "records_deleted": 0,
        "records_failed": failed,
        "next_cursor": cursor,
        "complete": cursor is None,
    }
    data = {"next_cursor": cursor, "complete": cursor is None}
    return {"success": failed == 0, "data": data, "statistics": statistics}


def stopped_by(error_type: str, cursor: str | None) -> dict[str, Any]:
    """A multi-key run that an error stopped."""
    error = {"type": error_type, "message": "Cloudflare rejected the token"}
    return {
        "success": False,
        "error": error,
        "statistics": {"next_cursor": cursor, "complete": False},
    }


def run(
    argv: list[str], function: ScriptedFunction, err: Stream | None = None
) -> tuple[int, str, str]:
    """Run the runner with ``argv`` on the scripted function; (status, stdout, stderr)."""
    out, err = Stream(), err or Stream()
    code = runner.run(runner.parse_args(argv, environ={}), out=out, err=err, handler=function)
    return code, out.getvalue(), err.getvalue()


# --------------------------------------------------------------------------- arguments


def test_defaults_follow_terraform() -> None:
    # WHEN nothing is passed and the environment is empty
    config = runner.parse_args([], environ={})

    # THEN the default key syncs into Terraform's table, with its secret and timeout
    assert config.table == "cloudflare-kv-data"
    assert config.secret_name == "cloudflare-kv-credentials"
    assert config.env_credentials is None
    assert config.timeout == 300.0
    assert runner.build_invocations(config)[0].event == {}


def test_table_secret_and_api_default_to_the_function_environment() -> None:
    # GIVEN the function's variables in the environment
    environ = {
        "DYNAMODB_TABLE_NAME": "other-table",
        "CLOUDFLARE_API_BASE_URL": "http://kv.local/client/v4",
        "SECRETS_MANAGER_SECRET_NAME": "other-secret",
    }
    # WHEN no flag overrides them THEN they are used
    config = runner.parse_args([], environ=environ)
    assert (config.table, config.secret_name) == ("other-table", "other-secret")
    assert config.api_base_url == "http://kv.local/client/v4"
    # AND flags win over them
    config = runner.parse_args(["--table", "t", "--secret-name", "s"], environ=environ)
    assert (config.table, config.secret_name) == ("t", "s")


def test_cloudflare_variables_replace_the_secret_and_stay_out_of_reprs() -> None:
    # WHEN the four CLOUDFLARE_* variables are set
    config = runner.parse_args([], environ=ENV_CREDENTIALS)

    # THEN they are the credentials, in the secret's JSON shape, and no secret is read
    assert config.secret_name is None
    assert config.env_credentials is not None
    assert json.loads(config.env_credentials) == {
        "api_token": TOKEN,
        "account_id": ACCOUNT_ID,
        "kv_namespace_id": NAMESPACE_ID,
        "kv_namespace": NAMESPACE_NAME,
    }
    assert TOKEN not in repr(config)
    # AND --secret-name wins over them
    config = runner.parse_args(["--secret-name", "prod"], environ=ENV_CREDENTIALS)
    assert (config.secret_name, config.env_credentials) == ("prod", None)


def test_incomplete_cloudflare_variables_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN two of the four variables
    environ = {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT_ID}

    # WHEN the runner parses its arguments THEN it exits 2 naming the missing ones
    with pytest.raises(SystemExit) as exited:
        runner.parse_args([], environ=environ)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "missing CLOUDFLARE_KV_NAMESPACE_ID, CLOUDFLARE_KV_NAMESPACE " in err
    assert TOKEN not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--key-name", "a", "--prefix", "p"], "not allowed with"),
        (["--all", "--key-names", "a"], "not allowed with"),
        (["--key-names"], "expected at least one argument"),
        (["--cursor", "c"], "--cursor continues"),
        (["--key-name", "a", "--cursor", "c"], "--cursor continues"),
        (["--key-names", *[f"k{i}" for i in range(1001)], "--cursor", "c"], "at most 1000"),
        (["--follow"], "--follow needs"),
        (["--key-name", "a", "--follow"], "--follow needs"),
        (["--all", "--max-invocations", "3"], "only applies with --follow"),
        (["--all", "--follow", "--max-invocations", "0"], "at least 1"),
        (["--timeout", "0"], "--timeout must be"),
        (["--timeout", "901"], "--timeout must be"),
        (["--timeout", "soon"], "invalid float value"),
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEN the arguments cannot work THEN the runner exits 2 and says why
    with pytest.raises(SystemExit) as exited:
        runner.parse_args(argv, environ={})
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize(
    ("argv", "event"),
    [
        (["--key-name", "k"], {"key_name": "k"}),
        (["--prefix", "flags/", "--delete-missing"], {"prefix": "flags/", "delete_missing": True}),
        (
            ["--all", "--cursor", "c1", "--no-delete-missing"],
            {"all": True, "cursor": "c1", "delete_missing": False},
        ),
        (["--key-names", "b", "a", "b"], {"key_names": ["b", "a"]}),
    ],
)
def test_each_selector_becomes_the_event_the_function_documents(
    argv: list[str], event: dict[str, Any]
) -> None:
    # WHEN a selector is given THEN one run starts with that direct-invocation event
    (invocation,) = runner.build_invocations(runner.parse_args(argv, environ={}))
    assert invocation.event == event


def test_more_names_than_one_event_takes_are_split_into_runs() -> None:
    from kv_sync.events import MAX_KEY_NAMES

    # GIVEN more names than two events of the function take
    names = [f"key-{i:05d}" for i in range(2 * MAX_KEY_NAMES + 500)]

    # WHEN the runs are built
    invocations = runner.build_invocations(runner.parse_args(["--key-names", *names], environ={}))

    # THEN three events carry them in order, as many as the function takes in each
    assert [len(i.event["key_names"]) for i in invocations] == [MAX_KEY_NAMES, MAX_KEY_NAMES, 500]
    assert [name for i in invocations for name in i.event["key_names"]] == names
    assert invocations[1].label == f"{MAX_KEY_NAMES} named key(s) (part 2 of 3)"


def test_the_function_gets_the_run_settings() -> None:
    # GIVEN env credentials and --verbose
    config = runner.parse_args(["--all", "--table", "t", "-v"], environ=ENV_CREDENTIALS)

    # WHEN the function's environment is built
    environment = runner.function_environment(config)

    # THEN the table is set, metrics are on, and the credentials' source is named
    assert environment["DYNAMODB_TABLE_NAME"] == "t"
    assert environment["SECRETS_MANAGER_SECRET_NAME"] == runner.ENV_CREDENTIALS_SOURCE
    assert environment["POWERTOOLS_METRICS_DISABLED"] == "false"
    assert TOKEN not in json.dumps(environment)


# --------------------------------------------------------------------------- env credentials


def test_the_env_credentials_provider_feeds_the_function_its_credentials() -> None:
    # GIVEN the provider of the CLOUDFLARE_* credentials, in use by the function
    config = runner.parse_args([], environ=ENV_CREDENTIALS)
    assert config.env_credentials is not None
    settings = Settings(table_name="t", secret_name=runner.ENV_CREDENTIALS_SOURCE)
    credentials.use_provider(runner.EnvCredentials(config.env_credentials))
    try:
        # WHEN the function loads its credentials
        loaded = credentials.load_credentials(settings)
    finally:
        credentials.use_provider(None)

    # THEN they are the variables' values
    assert loaded == credentials.CloudflareCredentials(
        TOKEN, ACCOUNT_ID, NAMESPACE_ID, NAMESPACE_NAME
    )


def test_the_function_validates_env_credentials_like_the_secret() -> None:
    # GIVEN a token variable still holding a placeholder
    environ = {**ENV_CREDENTIALS, "CLOUDFLARE_API_TOKEN": "<your-token>"}
    config = runner.parse_args([], environ=environ)
    assert config.env_credentials is not None
    settings = Settings(table_name="t", secret_name=runner.ENV_CREDENTIALS_SOURCE)
    credentials.use_provider(runner.EnvCredentials(config.env_credentials))
    try:
        # WHEN the function loads its credentials THEN it rejects them, naming field and source
        with pytest.raises(ConfigurationError) as rejected:
            credentials.load_credentials(settings)
    finally:
        credentials.use_provider(None)
    assert "placeholder values in: api_token" in rejected.value.message
    assert runner.ENV_CREDENTIALS_SOURCE in rejected.value.message


# --------------------------------------------------------------------------- exit status


@pytest.mark.parametrize(("success", "status"), [(True, 0), (False, 1)])
def test_the_exit_status_follows_the_document(success: bool, status: int) -> None:
    # GIVEN a function answering one document
    function = ScriptedFunction({"success": success, "data": {"key_name": "k"}})
    before = dict(os.environ)

    # WHEN one key is synced
    code, out, err = run(["--key-name", "k", "--table", "t", "--secret-name", "s"], function)

    # THEN stdout holds that document only, and the status follows its success
    assert (code, documents(out), err) == (
        status,
        [{"success": success, "data": {"key_name": "k"}}],
        "",
    )
    assert function.events == [{"key_name": "k"}]
    # AND the function ran with the run's environment, restored afterwards
    assert function.environments[0]["DYNAMODB_TABLE_NAME"] == "t"
    assert function.environments[0]["SECRETS_MANAGER_SECRET_NAME"] == "s"
    assert dict(os.environ) == before
    # AND with a context counting down from the timeout
    assert 0 < function.contexts[0].get_remaining_time_in_millis() <= 300_000


def test_follow_passes_each_next_cursor_until_complete() -> None:
    # GIVEN a run that needs three invocations
    function = ScriptedFunction(multi_key(10, "c1"), multi_key(10, "c2"), multi_key(5, None))

    # WHEN it is followed
    code, out, err = run(["--all", "--delete-missing", "--follow"], function)

    # THEN each invocation got the cursor of the one before, with a fresh context
    assert function.events == [
        {"all": True, "delete_missing": True},
        {"all": True, "delete_missing": True, "cursor": "c1"},
        {"all": True, "delete_missing": True, "cursor": "c2"},
    ]
    assert len({context.aws_request_id for context in function.contexts}) == 3
    # AND every document was printed, and the run is a success
    assert [d["statistics"]["keys_listed"] for d in documents(out)] == [10, 10, 5]
    assert (code, err) == (0, "")


def test_without_follow_an_incomplete_run_says_how_to_continue() -> None:
    # WHEN one invocation of a prefix run stops before the deadline
    code, _, err = run(["--prefix", "flags/"], ScriptedFunction(multi_key(10, "c-42")))

    # THEN it is a success, and stderr gives the cursor to continue with
    assert code == 0
    assert err == (
        "kv-sync: the run of prefix 'flags/' is not complete; "
        "continue with --cursor c-42 (same selector), or use --follow\n"
    )


@pytest.mark.parametrize(
    ("replies", "extra", "reason"),
    [
        (
            [multi_key(10, "c1"), stopped_by("AUTH_ERROR", "c1")],
            [],
            "AUTH_ERROR: Cloudflare rejected the token",
        ),
        (
            [multi_key(10, "c1"), multi_key(10, "c2")],
            ["--max-invocations", "2"],
            "--max-invocations 2 reached",
        ),
        (
            [{**multi_key(10, None), "statistics": {"complete": False}}],
            [],
            "the function returned no next_cursor",
        ),
    ],
)
def test_follow_stops_when_it_cannot_go_on_and_exits_1(
    replies: list[dict[str, Any]], extra: list[str], reason: str
) -> None:
    # GIVEN a run that cannot be completed
    function = ScriptedFunction(*replies)

    # WHEN it is followed
    code, _, err = run(["--all", "--follow", *extra], function)

    # THEN the runner stops right there, says why, and exits 1
    assert function.replies == []
    assert code == 1
    assert f"kv-sync: --follow stopped: {reason}\n" in err


def test_follow_goes_on_past_failed_keys_but_exits_1() -> None:
    # GIVEN a run in which one key failed in the first invocation
    function = ScriptedFunction(multi_key(10, "c1", failed=1), multi_key(5, None))

    # WHEN it is followed THEN it completes, and the failure sets the status
    code, out, _ = run(["--prefix", "p", "--follow"], function)
    assert len(documents(out)) == 2
    assert code == 1


def test_an_unfinished_run_of_names_leaves_later_runs_unstarted() -> None:
    # GIVEN 1,005 names: two runs, the first of which does not finish
    names = [f"k{i}" for i in range(1005)]
    function = ScriptedFunction(multi_key(0, "c1"))

    # WHEN they are synced without --follow
    code, _, err = run(["--key-names", *names], function)

    # THEN the second run never started, and stderr says to use --follow
    assert len(function.events) == 1
    assert code == 0
    assert err == (
        "kv-sync: the run of 1000 named key(s) (part 1 of 2) is not complete "
        "(5 more name(s) not started); run again with --follow\n"
    )


def test_an_interrupt_exits_130_with_the_progress_so_far() -> None:
    # GIVEN a function interrupted in its second invocation
    function = ScriptedFunction(multi_key(10, "c1"), KeyboardInterrupt())

    # WHEN the run is followed with a progress line
    code, out, err = run(["--all", "--follow", "--progress"], function)

    # THEN the first document was printed and the status is 130
    assert code == 130
    assert len(documents(out)) == 1
    assert err.splitlines()[-2].startswith("kv-sync interrupted: 2 invocation(s), 10 listed, ")
    assert err.splitlines()[-1] == "kv-sync: interrupted"


def test_a_run_without_an_aws_region_stops_before_invoking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN no region anywhere
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    function = ScriptedFunction()

    # WHEN the runner starts THEN it says so and exits 1, without invoking
    code, out, err = run([], function)
    assert (code, out) == (1, "")
    assert err.startswith("error: No AWS region")
    assert function.events == []


def test_an_unknown_profile_stops_before_invoking(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN no AWS config files
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)

    # WHEN a profile is asked for THEN the runner names it and exits 1
    code, _, err = run(["--profile", "no-such-profile"], ScriptedFunction())
    assert code == 1
    assert "no-such-profile" in err


# --------------------------------------------------------------------------- progress


@pytest.mark.parametrize(
    ("argv", "tty", "drawn"),
    [
        (["--all"], True, True),
        (["--all"], False, False),
        (["--all", "--progress"], False, True),
        (["--all", "--no-progress"], True, False),
        (["--key-name", "k", "--progress"], True, False),  # one key: no progress line
    ],
)
def test_the_progress_line_is_for_multi_key_runs_on_a_terminal_unless_forced(
    argv: list[str], tty: bool, drawn: bool
) -> None:
    # WHEN a run finishes with stderr a terminal, or not
    document = multi_key(3, None) if "--all" in argv else {"success": True}
    _, _, err = run(argv, ScriptedFunction(document), Stream(tty))

    # THEN the progress summary is there only for a multi-key run on a terminal, or forced
    assert ("kv-sync done: 1 invocation(s)" in err) is drawn


def stats(
    keys_listed: int = 0, keys_fetched: int = 0, records_written: int = 0, records_deleted: int = 0
) -> SyncStats:
    """The engine's statistics of a run so far."""
    return SyncStats(
        keys_listed=keys_listed,
        keys_fetched=keys_fetched,
        records_written=records_written,
        records_deleted=records_deleted,
    )


def test_progress_lines_add_up_pages_and_invocations() -> None:
    # GIVEN a progress line on a stream that is no terminal, with a clock
    stream, now = Stream(), [0.0]
    line = progress.ProgressLine(stream, clock=lambda: now[0])

    # WHEN two invocations report pages
    line.start_run(0, 0)
    line.start_invocation()
    now[0] = 1.0
    line.page(stats(keys_listed=10, keys_fetched=10, records_written=4))
    line.invocation_done(multi_key(20, "c1"))
    line.start_invocation()
    line.page(stats(keys_listed=5, keys_fetched=5, records_deleted=1))
    now[0] = 2.5
    line.finish("done")

    # THEN each update is a line, counting finished invocations and the running one
    assert stream.getvalue().splitlines() == [
        "kv-sync listed 10 | fetched 10 written 4 unchanged 0 deleted 0 failed 0 | invocation 1 | 1.0s",
        "kv-sync listed 20 | fetched 20 written 20 unchanged 0 deleted 0 failed 0 | invocation 1 | 1.0s",
        "kv-sync listed 25 | fetched 25 written 20 unchanged 0 deleted 1 failed 0 | invocation 2 | 1.0s",
        "kv-sync done: 2 invocation(s), 25 listed, 25 fetched, 20 written, 0 unchanged, "
        "1 deleted, 0 failed in 2.5s",
    ]


def test_the_bar_counts_pages_of_names_across_runs() -> None:
    from kv_sync.pages import NAMES_PAGE_SIZE

    # GIVEN a bar over 1,500 names in two runs
    stream = Stream()
    line = progress.ProgressLine(stream, total_names=1500, clock=lambda: 0.0)

    # WHEN the first run does one page
    line.start_run(0, 1000)
    line.start_invocation()
    line.page(stats(keys_fetched=NAMES_PAGE_SIZE))

    # THEN the bar shows that page's names
    done = NAMES_PAGE_SIZE
    filled = done * 24 // 1500
    assert stream.getvalue().startswith(
        f"kv-sync [{'#' * filled}{'.' * (24 - filled)}] {done}/1500 {done * 100 // 1500}% | "
    )

    # WHEN the second run does all of its pages
    line.start_run(1000, 500)
    for _ in range(-(-500 // NAMES_PAGE_SIZE) + 1):
        line.page(stats(keys_fetched=500))

    # THEN the bar is full, and never beyond
    assert (
        stream.getvalue()
        .splitlines()[-1]
        .startswith("kv-sync [########################] 1500/1500 100% | ")
    )


def test_on_a_terminal_the_line_is_redrawn_in_place_and_fits_the_width() -> None:
    # GIVEN a progress line on a 60-column terminal
    stream = Stream(tty=True)
    line = progress.ProgressLine(stream, redraw=True, clock=lambda: 0.0, width=60)

    # WHEN two pages are reported, then the run ends
    line.start_invocation()
    line.page(stats(keys_listed=1000))
    line.page(stats(keys_listed=2000))
    line.finish("done")

    # THEN each draw went back to the line's start, cut to 59 characters, never a newline
    text = stream.getvalue()
    draws = text.split("\n")[0].split("\r")
    assert draws[1] == "kv-sync listed 1000 | fetched 0 written 0 unchanged 0 delet"
    assert draws[2] == "kv-sync listed 2000 | fetched 0 written 0 unchanged 0 delet"
    # AND the summary replaced the line
    assert text.endswith(f"\r{' ' * 59}\rkv-sync done: 1 invocation(s), 2000 listed, 0 fetched, "
                         "0 written, 0 unchanged, 0 deleted, 0 failed in 0.0s\n")  # fmt: skip


def test_log_lines_clear_the_progress_line_and_bring_it_back() -> None:
    # GIVEN a progress line on a terminal
    stream = Stream(tty=True)
    line = progress.ProgressLine(stream, redraw=True, clock=lambda: 0.0, width=200)
    line.start_invocation()
    line.page(stats(keys_listed=7))
    drawn = stream.getvalue()

    # WHEN the function logs a line through the runner's stderr wrapper
    progress.LogsAroundProgress(stream, line).write('{"level":"WARNING","message":"Retrying"}\n')

    # THEN the line was wiped first, and drawn again below the log line
    blank = "\r" + " " * (len(drawn) - 1) + "\r"
    assert stream.getvalue() == (
        drawn + blank + '{"level":"WARNING","message":"Retrying"}\n' + drawn
    )
