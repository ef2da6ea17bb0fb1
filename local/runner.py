"""Run the kv-sync Lambda handler in-process, against AWS and Cloudflare or emulators.

  python -m local.runner --secret-name cloudflare-kv-credentials --key-name classic-domain
  python -m local.runner --table cloudflare-kv-data --all --follow
  python -m local.runner --endpoint-url http://127.0.0.1:5000 \\
      --api-base-url http://127.0.0.1:8787/client/v4 --prefix flags/ --delete-missing

Each invocation calls kv_sync.handler.lambda_handler with a direct-invocation event
and a fresh Lambda-like context; stdout holds only its response documents. More
--key-names than one event takes (1,000) run as several runs; --follow passes each
next_cursor back until the run is complete. Multi-key runs draw a progress line on
stderr, refreshed after every page.

Credentials: --secret-name reads that Secrets Manager secret. Without it, the four
variables CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_KV_NAMESPACE_ID
and CLOUDFLARE_KV_NAMESPACE are used when set (the function reads them through a
Powertools provider and validates them like the secret); otherwise the secret
$SECRETS_MANAGER_SECRET_NAME or 'cloudflare-kv-credentials'.

Exit status: 0 every document says success (and a --follow completed), 1 otherwise
or when the run cannot start, 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, cast

from aws_lambda_powertools.utilities.parameters.base import BaseProvider

from local.aws_setup import TABLE_NAME, TIMEOUT_SECONDS
from local.harness import (
    Handler,
    cli_exit,
    load_handler,
    patched_environ,
    powertools_output,
    print_json,
)
from local.lambda_context import LambdaContext
from local.progress import LogsAroundProgress, ProgressLine

# The variables of the env-credentials mode, and the secret field each fills.
CLOUDFLARE_ENV_VARS = {
    "CLOUDFLARE_API_TOKEN": "api_token",
    "CLOUDFLARE_ACCOUNT_ID": "account_id",
    "CLOUDFLARE_KV_NAMESPACE_ID": "kv_namespace_id",
    "CLOUDFLARE_KV_NAMESPACE": "kv_namespace",
}
# Stands in for the secret's name in the function's settings and error messages.
ENV_CREDENTIALS_SOURCE = "environment variables CLOUDFLARE_*"
DEFAULT_SECRET_NAME = "cloudflare-kv-credentials"
MAX_KEY_NAMES_PER_EVENT = 1000  # kv_sync.events.MAX_KEY_NAMES
EXIT_INTERRUPTED = 130


class RunnerError(Exception):
    """The run cannot start (no region, no AWS credentials, unknown profile, ...)."""


# ------------------------------------------------------------------------ the command line


@dataclass(frozen=True)
class RunConfig:
    """A checked command line."""

    table: str
    secret_name: str | None  # None: credentials from CLOUDFLARE_*
    env_credentials: str | None = field(default=None, repr=False)  # their JSON; never shown
    key_name: str | None = None
    key_names: tuple[str, ...] | None = None
    prefix: str | None = None
    all_keys: bool = False
    cursor: str | None = None
    delete_missing: bool | None = None
    dry_run: bool = False
    force_delete: bool = False
    follow: bool = False
    max_invocations: int | None = None
    progress: bool | None = None  # None: when stderr is a terminal
    api_base_url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    timeout: float = float(TIMEOUT_SECONDS)
    verbose: bool = False

    @property
    def is_bulk(self) -> bool:
        """Whether this selects several keys (names, a prefix or the namespace)."""
        return self.key_names is not None or self.prefix is not None or self.all_keys


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command-line interface; ``--table`` and ``--api-base-url`` default from ``env``."""
    parser = argparse.ArgumentParser(
        prog="python -m local.runner",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to sync (one of; default: the function's key)")
    one = what.add_mutually_exclusive_group()
    one.add_argument("--key-name", help="one KV key")
    one.add_argument("--key-names", nargs="+", metavar="KEY", help="these KV keys (any number)")
    one.add_argument("--prefix", help="every KV key whose name starts with PREFIX")
    one.add_argument("--all", dest="all_keys", action="store_true", help="every key")
    what.add_argument("--cursor", help="continue a --key-names/--prefix/--all run")
    what.add_argument(
        "--delete-missing",
        action=argparse.BooleanOptionalAction,
        help="delete records of keys gone from KV (default: the function's DELETE_MISSING)",
    )
    what.add_argument(
        "--dry-run",
        action="store_true",
        help="read everything, write nothing; report what would change",
    )
    what.add_argument(
        "--force-delete", action="store_true", help="delete even what the deletion guard refuses"
    )
    what.add_argument("--follow", action="store_true", help="invoke again until complete")
    what.add_argument("--max-invocations", type=int, metavar="N", help="--follow stops after N")
    what.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress line on stderr (default: when stderr is a terminal)",
    )
    parser.add_argument("--secret-name", help="Secrets Manager secret with the credentials")
    table = env.get("DYNAMODB_TABLE_NAME") or TABLE_NAME
    parser.add_argument("--table", default=table, help=f"DynamoDB table (default: {table})")
    parser.add_argument(
        "--api-base-url",
        default=env.get("CLOUDFLARE_API_BASE_URL") or None,
        help="Cloudflare API base URL (default: $CLOUDFLARE_API_BASE_URL or Cloudflare's)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(TIMEOUT_SECONDS),
        help="seconds each invocation may take, as Lambda's timeout (default: %(default)s)",
    )
    parser.add_argument("--region", help="AWS region (default: the credential chain's)")
    parser.add_argument("--profile", help="AWS profile (default: the credential chain's)")
    parser.add_argument("--endpoint-url", help="AWS endpoint (moto server, LocalStack)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="the function's log lines and EMF on stderr"
    )
    return parser


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> RunConfig:
    """Parse and check the command line (exit 2 on bad arguments); ``environ``: os.environ."""
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    args = parser.parse_args(argv)
    bulk = args.key_names is not None or args.prefix is not None or args.all_keys
    if args.cursor is not None and not bulk:
        parser.error("--cursor continues a --key-names, --prefix or --all run only")
    if args.cursor is not None and len(args.key_names or ()) > MAX_KEY_NAMES_PER_EVENT:
        parser.error(f"--cursor belongs to one run of at most {MAX_KEY_NAMES_PER_EVENT} names")
    if args.follow and not bulk:
        parser.error("--follow needs --key-names, --prefix or --all")
    if args.max_invocations is not None and not args.follow:
        parser.error("--max-invocations only applies with --follow")
    if args.max_invocations is not None and args.max_invocations < 1:
        parser.error("--max-invocations must be at least 1")
    if not 0 < args.timeout <= 900:
        parser.error("--timeout must be more than 0 and at most 900 (Lambda's maximum)")
    if args.secret_name is None:
        found = {name: env.get(name, "").strip() for name in CLOUDFLARE_ENV_VARS}
        missing = [name for name, value in found.items() if not value]
        if missing and len(missing) < len(found):
            parser.error(f"missing {', '.join(missing)} (set all four, or pass --secret-name)")
        if not missing:
            fields = {CLOUDFLARE_ENV_VARS[name]: value for name, value in found.items()}
            args.env_credentials = json.dumps(fields)
        else:
            secret = env.get("SECRETS_MANAGER_SECRET_NAME", "").strip()
            args.secret_name = secret or DEFAULT_SECRET_NAME
    if args.key_names is not None:
        args.key_names = tuple(args.key_names)
    return RunConfig(**vars(args))


@dataclass(frozen=True)
class Invocation:
    """One run to start: a label for messages, its first event, how many names it holds."""

    label: str
    event: dict[str, Any]
    names: int = 0


def build_invocations(config: RunConfig) -> list[Invocation]:
    """The runs to start, in order: one, or one per 1,000 names of ``--key-names``."""
    options: dict[str, Any] = {"cursor": config.cursor, "delete_missing": config.delete_missing}
    options |= {"dry_run": config.dry_run or None, "force_delete": config.force_delete or None}
    options = {name: value for name, value in options.items() if value is not None}
    if config.key_names is not None:
        names = list(dict.fromkeys(config.key_names))  # the function drops duplicates too
        size = MAX_KEY_NAMES_PER_EVENT
        chunks = [names[start : start + size] for start in range(0, len(names), size)]
        part = " (part {} of {})" if len(chunks) > 1 else ""
        return [
            Invocation(
                f"{len(chunk)} named key(s){part.format(number, len(chunks))}",
                {"key_names": chunk, **options},
                len(chunk),
            )
            for number, chunk in enumerate(chunks, start=1)
        ]
    if config.prefix is not None:
        return [Invocation(f"prefix {config.prefix!r}", {"prefix": config.prefix, **options})]
    if config.all_keys:
        return [Invocation("the whole namespace", {"all": True, **options})]
    if config.key_name is None:
        return [Invocation("the default key", options)]
    return [Invocation(repr(config.key_name), {"key_name": config.key_name, **options})]


class EnvCredentials(BaseProvider):
    """A Powertools parameters provider answering any name with the ``CLOUDFLARE_*`` JSON."""

    def __init__(self, credentials_json: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._fields: dict[str, str] = json.loads(credentials_json)

    def _get(self, name: str, **sdk_options: Any) -> str:
        return json.dumps(self._fields)

    def _get_multiple(self, path: str, **sdk_options: Any) -> dict[str, str]:
        return dict(self._fields)


# ------------------------------------------------------------------------ running


@dataclass
class Outcome:
    """What the invocations came to; ``unfinished``: the run left incomplete, if any."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    unfinished: Invocation | None = None
    cursor: str | None = None  # where ``unfinished`` stands
    stopped: str | None = None  # why --follow could not go on
    not_started: int = 0  # names of later --key-names runs


def run_invocations(
    handler: Handler,
    invocations: Sequence[Invocation],
    config: RunConfig,
    emit: Callable[[dict[str, Any]], None],
    display: ProgressLine | None = None,
) -> Outcome:
    """Invoke ``handler`` for each run (with ``--follow``, until each is complete).

    Each call gets a fresh ``LambdaContext``; ``emit`` gets each document as it
    arrives. Without ``--follow`` the first incomplete run ends the sequence.
    """
    documents: list[dict[str, Any]] = []
    names_before = 0
    for index, invocation in enumerate(invocations):
        if display is not None:
            display.start_run(names_before, invocation.names)
        event = invocation.event
        while True:
            if display is not None:
                display.start_invocation()
            document = handler(event, LambdaContext(timeout_ms=int(config.timeout * 1000)))
            documents.append(document)
            emit(document)
            if display is not None:
                display.invocation_done(document)
            statistics, error = document.get("statistics") or {}, document.get("error")
            if statistics.get("complete", True) is True:
                break  # the run is complete (single keys and rejected requests always are)
            cursor = statistics.get("next_cursor") or None
            reason = None
            if isinstance(error, Mapping):
                reason = f"{error.get('type')}: {error.get('message')}"
            elif cursor is None:
                reason = "the function returned no next_cursor"
            elif config.max_invocations is not None and len(documents) >= config.max_invocations:
                reason = f"--max-invocations {config.max_invocations} reached"
            if not config.follow or reason is not None:
                later = sum(run.names for run in invocations[index + 1 :])
                return Outcome(
                    documents, invocation, cursor, reason if config.follow else None, later
                )
            event = {**invocation.event, "cursor": cursor}
        names_before += invocation.names
    return Outcome(documents)


def function_environment(config: RunConfig) -> dict[str, str | None]:
    """The environment the function runs with (``None``: unset)."""
    return {
        "DYNAMODB_TABLE_NAME": config.table,
        "SECRETS_MANAGER_SECRET_NAME": config.secret_name or ENV_CREDENTIALS_SOURCE,
        "CLOUDFLARE_API_BASE_URL": config.api_base_url or os.environ.get("CLOUDFLARE_API_BASE_URL"),
        "AWS_ENDPOINT_URL": config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
        "POWERTOOLS_SERVICE_NAME": os.environ.get("POWERTOOLS_SERVICE_NAME") or "kv-sync",
        "POWERTOOLS_METRICS_NAMESPACE": os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "KvSync",
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
        "POWERTOOLS_METRICS_DISABLED": "false" if config.verbose else "true",
    }


@contextlib.contextmanager
def aws_session(config: RunConfig) -> Iterator[None]:
    """boto3's default session from ``--profile``/``--region``, checked before any call."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.Session(profile_name=config.profile, region_name=config.region)
        found = session.get_credentials()
    except BotoCoreError as exc:
        raise RunnerError(str(exc)) from None
    if not session.region_name:
        raise RunnerError("No AWS region: pass --region, set AWS_REGION, or use a profile")
    if found is None:
        raise RunnerError(
            "No AWS credentials found: pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
            "or log in with 'aws sso login'"
        )
    previous, boto3.DEFAULT_SESSION = boto3.DEFAULT_SESSION, session
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION = previous


def run(
    config: RunConfig,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
    handler: Handler | None = None,
) -> int:
    """Run ``config``'s invocations, printing each document; returns the exit status.

    ``handler`` defaults to ``kv_sync.handler.lambda_handler``.
    """
    out, err = out or sys.stdout, err or sys.stderr
    invocations = build_invocations(config)
    terminal = bool(getattr(err, "isatty", lambda: False)())
    display = logs = None
    if config.is_bulk and (config.progress or (config.progress is None and terminal)):
        # A bar when the names to go are known: not after a --cursor.
        total = 0 if config.cursor else sum(run.names for run in invocations)
        display = ProgressLine(err, total_names=total, redraw=terminal)
        logs = LogsAroundProgress(err, display) if terminal else None

    def emit(document: dict[str, Any]) -> None:
        if display is not None:
            display.clear()
        print_json(document, out)

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched_environ(function_environment(config)))
        try:
            stack.enter_context(aws_session(config))
        except RunnerError as exc:
            print(f"error: {exc}", file=err)
            return 1
        from kv_sync import credentials, engine, runtime

        handler = handler or load_handler()
        runtime.reset_clients()  # clients follow this run's endpoint and session
        stack.callback(runtime.reset_clients)
        stack.callback(credentials.use_provider, None)
        env = config.env_credentials
        credentials.use_provider(EnvCredentials(env) if env else None)
        log_stream = cast("IO[str]", logs or err)
        level, emf = ("INFO", log_stream) if config.verbose else ("WARNING", io.StringIO())
        stack.enter_context(powertools_output(log_stream, level, emf))
        if display is not None:
            engine.add_progress_listener(display.page)
            stack.callback(engine.remove_progress_listener, display.page)
        try:
            outcome = run_invocations(handler, invocations, config, emit, display)
        except KeyboardInterrupt:
            if display is not None:
                display.finish("interrupted")
            print("kv-sync: interrupted", file=err)
            return EXIT_INTERRUPTED
    if display is not None:
        display.finish("stopped" if outcome.stopped else "paused" if outcome.unfinished else "done")
    if outcome.stopped is not None:
        print(f"kv-sync: --follow stopped: {outcome.stopped}", file=err)
    if outcome.unfinished is not None:
        what = f"kv-sync: the run of {outcome.unfinished.label} is not complete"
        if outcome.cursor is None:
            print(f"{what} and gave no cursor; run it again", file=err)
        elif len(invocations) > 1:
            later = f" ({outcome.not_started} more name(s) not started)" * bool(outcome.not_started)
            print(f"{what}{later}; run again with --follow", file=err)
        else:
            hint = f"continue with --cursor {outcome.cursor} (same selector), or use --follow"
            print(f"{what}; {hint}", file=err)
    succeeded = all(document.get("success") is True for document in outcome.documents)
    return 0 if succeeded and not (config.follow and outcome.unfinished) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m local.runner``; returns the exit status."""
    return run(parse_args(argv))


if __name__ == "__main__":
    cli_exit(main)
