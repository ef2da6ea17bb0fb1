"""Run the Lambda handler in-process from a laptop, against real services or emulators.

Usage (from the repository root)::

    # Credentials from Secrets Manager, with the normal AWS credential chain
    python -m local.runner --secret-name cloudflare-kv-credentials --key-name classic-domain

    # Credentials from CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID,
    # CLOUDFLARE_KV_NAMESPACE_ID and CLOUDFLARE_KV_NAMESPACE: Secrets Manager is not used
    python -m local.runner --table cloudflare-kv-data

    # Against moto server / LocalStack and the KV emulator
    python -m local.runner --endpoint-url http://127.0.0.1:5000 \\
        --api-base-url http://127.0.0.1:8787/client/v4 --key-name classic-domain

The runner invokes the same ``handler.lambda_handler`` that Lambda runs, with a
direct-invocation event and a Lambda-like context, and prints the response
document on stdout. Exit status: 0 when the document says ``success``, 1 when it
does not or the run could not start, 2 for bad arguments.

Credentials from environment variables: the function always reads its
credentials through ``credentials.load_credentials``. For this mode only, the
runner replaces that function in its own process with one that validates the
``CLOUDFLARE_*`` variables with the function's own ``parse_credentials``, so the
rest of the sync (fetch, retries, record, conditional write) is the deployed code.

``--verbose`` sends the function's Powertools log lines and EMF metrics to
stderr; otherwise only warnings and errors are logged (to stderr) and metrics
are dropped. stdout only ever holds the response document.

This module also holds what ``local.demo`` shares with it: :class:`LocalContext`,
:func:`load_handler`, :func:`patched_environ` and :func:`powertools_output`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from local.aws_setup import FUNCTION_NAME, MEMORY_MB, TABLE_NAME, TIMEOUT_SECONDS

if TYPE_CHECKING:
    from config import Settings
    from credentials import CloudflareCredentials

LAMBDA_DIR = Path(__file__).resolve().parent.parent / "lambda_function"

# Environment variables the env-credentials mode reads, and the secret field each fills.
CLOUDFLARE_ENV_VARS = {
    "CLOUDFLARE_API_TOKEN": "api_token",
    "CLOUDFLARE_ACCOUNT_ID": "account_id",
    "CLOUDFLARE_KV_NAMESPACE_ID": "kv_namespace_id",
    "CLOUDFLARE_KV_NAMESPACE": "kv_namespace",
}
# Stands in for the secret's name in load_settings() and in error messages.
ENV_CREDENTIALS_SOURCE = "environment variables CLOUDFLARE_*"
DEFAULT_SECRET_NAME = "cloudflare-kv-credentials"

Handler = Callable[[Any, Any], Any]
Progress = Callable[[int, int, dict[str, Any]], None]


class RunnerError(Exception):
    """The run cannot start (no region, no AWS credentials, unknown profile, ...)."""


# --------------------------------------------------------------------------- shared pieces


@dataclass
class LocalContext:
    """Enough of Lambda's context object for the handler, Powertools and the deadline.

    ``get_remaining_time_in_millis`` counts down in real time from ``timeout_s``,
    as Lambda's does, so the function's deadline logic behaves as deployed.
    """

    timeout_s: float = TIMEOUT_SECONDS
    function_name: str = FUNCTION_NAME
    memory_limit_in_mb: int = MEMORY_MB
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = f"/aws/lambda/{FUNCTION_NAME}"
    log_stream_name: str = "local"
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _deadline: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._deadline = self.clock() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before this invocation's timeout."""
        return max(0, int((self._deadline - self.clock()) * 1000))


def load_handler() -> Handler:
    """Import the Lambda package as Lambda does (modules at the top level).

    Call it after the environment is set: the function reads some settings
    (service name, metrics namespace, log level) when its modules are imported.
    """
    path = str(LAMBDA_DIR)
    if sys.path[:1] != [path]:
        # First on the path, so the package's top-level ``config``, ``errors``,
        # ... win over any same-named module elsewhere.
        with contextlib.suppress(ValueError):
            sys.path.remove(path)
        sys.path.insert(0, path)
    import handler

    lambda_handler: Handler = handler.lambda_handler
    return lambda_handler


@contextlib.contextmanager
def patched_environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for ``None``, remove) environment variables; restore them on exit."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


@contextlib.contextmanager
def powertools_output(
    stream: IO[str], level: str | None = None, metrics_stream: IO[str] | None = None
) -> Iterator[None]:
    """Send the function's log lines to ``stream`` while inside, EMF metrics too.

    The Powertools logger keeps the stream it was created with and the metrics
    ``print`` to stdout, so both are redirected here, keeping stdout for results.
    ``metrics_stream`` (default ``stream``) takes the EMF documents: Powertools'
    ``single_metric`` prints even with ``POWERTOOLS_METRICS_DISABLED``, so pass a
    sink to drop them.
    """
    from observability import logger, metrics

    handler: Any = logger.registered_handler
    previous_stream, previous_level = handler.stream, logger.log_level
    handler.stream = stream
    if level is not None:
        logger.setLevel(level)
    try:
        with contextlib.redirect_stdout(stream if metrics_stream is None else metrics_stream):
            yield
    finally:
        # With POWERTOOLS_METRICS_DISABLED, Powertools skips the flush and so never
        # clears the metric set; clear it so values do not pile up across invocations.
        metrics.clear_metrics()
        handler.stream = previous_stream
        logger.setLevel(previous_level)


def reset_function_state() -> None:
    """Drop the function's cached AWS clients and secret, so they follow the current env."""
    import aws_clients
    import credentials

    aws_clients.reset_clients()
    credentials.reset_cache()


# --------------------------------------------------------------------------- the runner


@dataclass(frozen=True)
class RunConfig:
    """A validated command line."""

    key_name: str | None
    table: str
    secret_name: str | None
    # JSON in the secret's shape; never printed (repr=False keeps it out of tracebacks).
    env_credentials: str | None = field(repr=False)
    api_base_url: str | None
    timeout_s: float
    region: str | None
    profile: str | None
    endpoint_url: str | None
    verbose: bool


@dataclass(frozen=True)
class Invocation:
    """One handler call: a label for progress output and the event."""

    label: str
    event: dict[str, Any]


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command-line interface; defaults come from ``environ`` (``os.environ``)."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m local.runner",
        description=(
            "Run the kv-sync Lambda handler locally against real AWS and Cloudflare "
            "(or emulators) and print its response document."
        ),
        epilog=(
            "Credentials: --secret-name reads them from Secrets Manager. Without it, "
            "CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_KV_NAMESPACE_ID and "
            "CLOUDFLARE_KV_NAMESPACE are used when set (no Secrets Manager call); otherwise "
            "the secret named by SECRETS_MANAGER_SECRET_NAME or "
            f"'{DEFAULT_SECRET_NAME}'. Exit status: 0 success, 1 failure, 2 bad arguments."
        ),
    )
    parser.add_argument("--key-name", help="KV key to sync (default: the function's default key)")
    parser.add_argument(
        "--secret-name", help="Secrets Manager secret with the Cloudflare credentials JSON"
    )
    parser.add_argument(
        "--table",
        default=env.get("DYNAMODB_TABLE_NAME") or TABLE_NAME,
        help="DynamoDB table (default: $DYNAMODB_TABLE_NAME or %(default)s)",
    )
    parser.add_argument(
        "--api-base-url",
        default=env.get("CLOUDFLARE_API_BASE_URL") or None,
        help="Cloudflare API base URL (default: $CLOUDFLARE_API_BASE_URL or Cloudflare's)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=float(TIMEOUT_SECONDS),
        help="seconds the fake Lambda context allows (default: %(default)s)",
    )
    parser.add_argument("--region", help="AWS region (default: the credential chain's)")
    parser.add_argument("--profile", help="AWS profile (default: the credential chain's)")
    parser.add_argument(
        "--endpoint-url", help="AWS endpoint for every service (moto server, LocalStack)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the function's log lines and EMF metrics on stderr",
    )
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 900:
        raise argparse.ArgumentTypeError("must be between 0 and 900 seconds (Lambda's maximum)")
    return value


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> RunConfig:
    """Parse and validate the command line; exits with status 2 on bad arguments.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).
    environ
        Where ``CLOUDFLARE_*`` credentials and the defaults of ``--table``,
        ``--api-base-url`` and the secret name are read (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    args = parser.parse_args(argv)
    env_credentials: str | None = None
    secret_name: str | None = args.secret_name
    if secret_name is None:
        present = {name: env.get(name, "").strip() for name in CLOUDFLARE_ENV_VARS}
        if any(present.values()):
            missing = [name for name, value in present.items() if not value]
            if missing:
                parser.error(
                    f"missing {', '.join(missing)} (set all four CLOUDFLARE_* variables, "
                    "or pass --secret-name)"
                )
            env_credentials = json.dumps(
                {field_: present[name] for name, field_ in CLOUDFLARE_ENV_VARS.items()}
            )
        else:
            secret_name = env.get("SECRETS_MANAGER_SECRET_NAME", "").strip() or (
                DEFAULT_SECRET_NAME
            )
    return RunConfig(
        key_name=args.key_name,
        table=args.table,
        secret_name=secret_name,
        env_credentials=env_credentials,
        api_base_url=args.api_base_url,
        timeout_s=args.timeout,
        region=args.region,
        profile=args.profile,
        endpoint_url=args.endpoint_url,
        verbose=args.verbose,
    )


def build_invocations(config: RunConfig) -> list[Invocation]:
    """The events to send, in order.

    One today (a key or the default key); a later multi-key mode (lists, prefixes)
    returns more and :func:`run_invocations` reports progress through its hook.
    """
    if config.key_name is None:
        return [Invocation("default key", {})]
    return [Invocation(config.key_name, {"key_name": config.key_name})]


def run_invocations(
    handler: Handler,
    invocations: Sequence[Invocation],
    timeout_s: float,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Call the handler once per invocation, each with a fresh context.

    ``progress(done, total, document)`` is called after each one; a multi-key mode
    can draw its progress line there (single keys need none).
    """
    documents: list[dict[str, Any]] = []
    for invocation in invocations:
        document = handler(invocation.event, LocalContext(timeout_s=timeout_s))
        documents.append(document if isinstance(document, dict) else {"success": False})
        if progress is not None:
            progress(len(documents), len(invocations), documents[-1])
    return documents


def function_environment(config: RunConfig) -> dict[str, str | None]:
    """The environment variables the function needs for this run (``None`` = unset)."""
    return {
        "DYNAMODB_TABLE_NAME": config.table,
        "SECRETS_MANAGER_SECRET_NAME": config.secret_name or ENV_CREDENTIALS_SOURCE,
        "CLOUDFLARE_API_BASE_URL": config.api_base_url or os.environ.get("CLOUDFLARE_API_BASE_URL"),
        "AWS_ENDPOINT_URL": config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"),
        "POWERTOOLS_SERVICE_NAME": os.environ.get("POWERTOOLS_SERVICE_NAME") or "kv-sync",
        "POWERTOOLS_METRICS_NAMESPACE": os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "KvSync",
        # X-Ray needs the Lambda runtime's daemon; off outside Lambda.
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "false" if config.verbose else "true",
    }


@contextlib.contextmanager
def credentials_from_env(credentials_json: str | None) -> Iterator[None]:
    """Make the function read its credentials from ``credentials_json``, not Secrets Manager.

    The documented local-runner seam: ``credentials.load_credentials`` is replaced
    in this process only, and restored on exit. ``None`` leaves it alone.
    """
    if credentials_json is None:
        yield
        return
    import credentials

    original = credentials.load_credentials

    def from_env(settings: Settings, *, force_fetch: bool = False) -> CloudflareCredentials:
        # Same validation (missing fields, placeholders) as the secret gets.
        return credentials.parse_credentials(credentials_json, ENV_CREDENTIALS_SOURCE)

    credentials.load_credentials = from_env
    try:
        yield
    finally:
        credentials.load_credentials = original


@contextlib.contextmanager
def aws_session(config: RunConfig) -> Iterator[None]:
    """Make a boto3 default session from ``--profile``/``--region`` and the chain.

    Checked up front, so a missing region or credentials gives one clear message
    instead of a failure document from deep inside the sync.
    """
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.Session(profile_name=config.profile, region_name=config.region)
        region = session.region_name
        found = session.get_credentials()
    except BotoCoreError as exc:
        raise RunnerError(str(exc)) from None
    if not region:
        raise RunnerError("No AWS region: pass --region, set AWS_REGION, or use a profile")
    if found is None:
        raise RunnerError(
            "No AWS credentials found: pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID, "
            "or log in with 'aws sso login'"
        )
    previous = boto3.DEFAULT_SESSION
    boto3.DEFAULT_SESSION = session
    try:
        yield
    finally:
        boto3.DEFAULT_SESSION = previous


def run(config: RunConfig, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the invocations of ``config`` and print each response document.

    Returns
    -------
    int
        0 when every document says ``success``, otherwise 1.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched_environ(function_environment(config)))
        try:
            stack.enter_context(aws_session(config))
        except RunnerError as exc:
            print(f"error: {exc}", file=err)
            return 1
        handler = load_handler()
        reset_function_state()
        stack.callback(reset_function_state)
        stack.enter_context(credentials_from_env(config.env_credentials))
        level, emf = ("INFO", err) if config.verbose else ("WARNING", io.StringIO())
        stack.enter_context(powertools_output(err, level, emf))
        documents = run_invocations(handler, build_invocations(config), config.timeout_s)
    for document in documents:
        print(json.dumps(document, indent=2, ensure_ascii=False, default=str), file=out)
    return 0 if all(document.get("success") is True for document in documents) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m local.runner``; returns the exit status."""
    return run(parse_args(argv))


def cli_exit(entry: Callable[[], int]) -> None:
    """Run a command's ``main`` and exit with its status; a closed stdout is quiet.

    ``python -m local.demo | head`` closes the pipe early: exit 1 without a traceback.
    """
    try:
        status = entry()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at devnull so that cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    sys.exit(status)


if __name__ == "__main__":
    cli_exit(main)
