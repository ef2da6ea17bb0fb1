"""Run the Lambda handler in-process from a laptop, against real services or emulators.

Usage (from the repository root)::

    # Credentials from Secrets Manager, with the normal AWS credential chain
    python -m local.runner --secret-name cloudflare-kv-credentials --key-name classic-domain

    # Credentials from CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID,
    # CLOUDFLARE_KV_NAMESPACE_ID and CLOUDFLARE_KV_NAMESPACE: Secrets Manager is not used
    python -m local.runner --table cloudflare-kv-data

    # A backfill of the whole namespace, invocation after invocation until complete
    python -m local.runner --secret-name cloudflare-kv-credentials --all --follow

    # Named keys, or every key under a prefix, deleting records of keys gone from KV
    python -m local.runner --key-names classic-domain maintenance-window
    python -m local.runner --prefix flags/ --delete-missing --follow

    # Against moto server / LocalStack and the KV emulator
    python -m local.runner --endpoint-url http://127.0.0.1:5000 \\
        --api-base-url http://127.0.0.1:8787/client/v4 --key-name classic-domain

The runner invokes the same ``handler.lambda_handler`` that Lambda runs, with a
direct-invocation event and a Lambda-like context, and prints each response
document on stdout as it arrives. Exit status: 0 when every document says
``success`` (and, with ``--follow``, the run completed), 1 when one does not or
the run could not start, 2 for bad arguments, 130 when interrupted.

Selectors: ``--key-name`` (one key; the function's default key without any
selector), ``--key-names`` (any number: more than the function's 1,000 a call
are sent as several runs), ``--prefix`` and ``--all``. ``--cursor`` resumes a
multi-key run from the ``next_cursor`` of an earlier one; ``--follow`` keeps
invoking with each ``next_cursor`` until the run is complete, as the deployed
function's self-continuation would (which the runner always turns off, so a
local run never invokes the deployed function).

Progress: multi-key runs draw a progress line on stderr, refreshed after every
page the function finishes (keys listed, fetched, written, unchanged, deleted,
failed, invocations, elapsed time; a bar for ``--key-names``, whose total is
known) and end it with a summary line. It is on when stderr is a terminal;
``--progress`` forces it (one line per update when stderr is not a terminal) and
``--no-progress`` turns it off.

Credentials from environment variables: the function always reads its
credentials through ``credentials.load_credentials``. For this mode only, the
runner replaces that function in its own process with one that validates the
``CLOUDFLARE_*`` variables with the function's own ``parse_credentials``, so the
rest of the sync (fetch, retries, record, conditional write) is the deployed code.

``--verbose`` sends the function's Powertools log lines and EMF metrics to
stderr; otherwise only warnings and errors are logged (to stderr) and metrics
are dropped. stdout only ever holds response documents.

This module also holds what ``local.demo`` shares with it: :class:`LocalContext`,
:func:`load_handler`, :func:`patched_environ` and :func:`powertools_output`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

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

# Named keys the function takes in one event (events.MAX_KEY_NAMES); more are
# sent as consecutive runs of at most this many.
MAX_KEY_NAMES_PER_EVENT = 1000
EXIT_INTERRUPTED = 130
# The counters of a multi-key run the progress line adds up across invocations.
TALLY_FIELDS = (
    "keys_listed",
    "keys_fetched",
    "records_written",
    "records_unchanged",
    "records_deleted",
    "records_failed",
)


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
    key_names: tuple[str, ...] | None = None
    prefix: str | None = None
    all_keys: bool = False
    cursor: str | None = None
    delete_missing: bool | None = None
    follow: bool = False
    max_invocations: int | None = None
    # None: on when stderr is a terminal.
    progress: bool | None = None

    @property
    def is_bulk(self) -> bool:
        """Whether this selects more than one key (a list, a prefix or the namespace)."""
        return self.key_names is not None or self.prefix is not None or self.all_keys


@dataclass(frozen=True)
class Invocation:
    """One run to start: a label, its first event, and how many names it holds."""

    label: str
    event: dict[str, Any]
    names: int | None = None


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command-line interface; defaults come from ``environ`` (``os.environ``)."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m local.runner",
        description=(
            "Run the kv-sync Lambda handler locally against real AWS and Cloudflare "
            "(or emulators) and print its response documents."
        ),
        epilog=(
            "Credentials: --secret-name reads them from Secrets Manager. Without it, "
            "CLOUDFLARE_API_TOKEN, CLOUDFLARE_ACCOUNT_ID, CLOUDFLARE_KV_NAMESPACE_ID and "
            "CLOUDFLARE_KV_NAMESPACE are used when set (no Secrets Manager call); otherwise "
            "the secret named by SECRETS_MANAGER_SECRET_NAME or "
            f"'{DEFAULT_SECRET_NAME}'. Exit status: 0 success, 1 failure or an incomplete "
            "--follow, 2 bad arguments, 130 interrupted."
        ),
    )
    selector = parser.add_argument_group("what to sync (one of; default: the function's key)")
    choice = selector.add_mutually_exclusive_group()
    choice.add_argument("--key-name", help="one KV key")
    choice.add_argument(
        "--key-names",
        nargs="+",
        metavar="KEY",
        help=f"these KV keys (more than {MAX_KEY_NAMES_PER_EVENT} run as several syncs)",
    )
    choice.add_argument("--prefix", help="every KV key whose name starts with PREFIX")
    choice.add_argument(
        "--all", dest="all_keys", action="store_true", help="every key in the namespace"
    )
    selector.add_argument(
        "--cursor", help="continue a --key-names/--prefix/--all run from its next_cursor"
    )
    selector.add_argument(
        "--delete-missing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="delete records of keys gone from KV (default: the function's DELETE_MISSING)",
    )
    selector.add_argument(
        "--follow",
        action="store_true",
        help="keep invoking with next_cursor until the multi-key run is complete",
    )
    selector.add_argument(
        "--max-invocations",
        type=_positive_int,
        metavar="N",
        help="with --follow, stop after N invocations (default: no limit)",
    )
    selector.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr for multi-key runs (default: when stderr is a terminal)",
    )
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
        help="seconds each invocation's fake Lambda context allows (default: %(default)s)",
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
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
    bulk = args.key_names is not None or args.prefix is not None or args.all_keys
    if args.cursor is not None and not bulk:
        parser.error("--cursor continues a --key-names, --prefix or --all run only")
    if args.cursor is not None and len(args.key_names or ()) > MAX_KEY_NAMES_PER_EVENT:
        parser.error(
            f"--cursor belongs to one run of at most {MAX_KEY_NAMES_PER_EVENT} names; "
            "pass the names of that run"
        )
    if args.follow and not bulk:
        parser.error("--follow needs --key-names, --prefix or --all")
    if args.max_invocations is not None and not args.follow:
        parser.error("--max-invocations only applies with --follow")
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
        key_names=tuple(args.key_names) if args.key_names is not None else None,
        prefix=args.prefix,
        all_keys=args.all_keys,
        cursor=args.cursor,
        delete_missing=args.delete_missing,
        follow=args.follow,
        max_invocations=args.max_invocations,
        progress=args.progress,
    )


def build_invocations(config: RunConfig) -> list[Invocation]:
    """The runs to start, in order, each as its first event.

    One for a key, the default key, a prefix or the namespace; one per 1,000
    names for ``--key-names`` (the function's limit per event).
    """
    options: dict[str, Any] = {}
    if config.cursor is not None:
        options["cursor"] = config.cursor
    if config.delete_missing is not None:
        options["delete_missing"] = config.delete_missing
    if config.key_names is not None:
        names = list(dict.fromkeys(config.key_names))  # the function ignores duplicates too
        chunks = [
            names[start : start + MAX_KEY_NAMES_PER_EVENT]
            for start in range(0, len(names), MAX_KEY_NAMES_PER_EVENT)
        ]
        return [
            Invocation(
                f"{len(chunk)} named key(s)"
                + (f" (part {index} of {len(chunks)})" if len(chunks) > 1 else ""),
                {"key_names": chunk, **options},
                names=len(chunk),
            )
            for index, chunk in enumerate(chunks, start=1)
        ]
    if config.prefix is not None:
        return [Invocation(f"prefix {config.prefix!r}", {"prefix": config.prefix, **options})]
    if config.all_keys:
        return [Invocation("the whole namespace", {"all": True, **options})]
    if config.key_name is None:
        return [Invocation("default key", dict(options))]
    return [Invocation(config.key_name, {"key_name": config.key_name, **options})]


# --------------------------------------------------------------------------- progress


@dataclass
class Tally:
    """Counters of a multi-key run (see :data:`TALLY_FIELDS`)."""

    keys_listed: int = 0
    keys_fetched: int = 0
    records_written: int = 0
    records_unchanged: int = 0
    records_deleted: int = 0
    records_failed: int = 0

    @classmethod
    def of(cls, source: object) -> Tally:
        """Read the counters of a ``statistics`` block or of the function's ``BulkStats``."""
        values: dict[str, int] = {}
        for name in TALLY_FIELDS:
            raw = source.get(name) if isinstance(source, Mapping) else getattr(source, name, 0)
            values[name] = raw if isinstance(raw, int) and not isinstance(raw, bool) else 0
        return cls(**values)

    def __add__(self, other: Tally) -> Tally:
        return Tally(**{name: getattr(self, name) + getattr(other, name) for name in TALLY_FIELDS})


class ProgressLine:
    """A one-line progress display of a multi-key run, on a stream (stderr).

    With ``redraw`` (a terminal) the line is rewritten in place and throttled
    to ``min_interval`` seconds; otherwise every update is a line of its own.
    Counters add up finished invocations (their ``statistics``) and the pages
    done so far in the current one.
    """

    SPINNER = "|/-\\"
    BAR_WIDTH = 24

    def __init__(
        self,
        stream: IO[str],
        *,
        total_names: int | None = None,
        redraw: bool = True,
        min_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self.stream = stream
        self.total_names = total_names
        self.redraw = redraw
        self.min_interval = min_interval
        self.clock = clock
        self.width = width
        self.started = clock()
        self.finished_tally = Tally()
        self.live = Tally()
        self.invocations = 0
        self.in_flight = False
        self.names_base = 0
        self.names_done = 0
        self._ticks = 0
        self._last_draw: float | None = None
        self._shown = 0  # characters of the line now on screen (redraw mode)

    # Events from the run loop ----------------------------------------------------

    def start_invocation(self, names_base: int = 0) -> None:
        """A new invocation begins; ``names_base`` counts names of earlier runs."""
        self.names_base = names_base
        self.live = Tally()
        self.in_flight = True

    def page(self, stats: object, offset: int | None) -> None:
        """The function finished a page; ``stats`` is its running ``BulkStats``."""
        self.live = Tally.of(stats)
        if offset is not None:
            self.names_done = max(self.names_done, self.names_base + offset)
        self.draw()

    def invocation_done(self, document: Mapping[str, Any], names_done: int | None) -> None:
        """An invocation returned ``document``."""
        statistics = document.get("statistics")
        self.finished_tally = self.finished_tally + Tally.of(
            statistics if isinstance(statistics, Mapping) else {}
        )
        self.live = Tally()
        self.invocations += 1
        self.in_flight = False
        if names_done is not None:
            self.names_done = max(self.names_done, names_done)
        self.draw(force=True)

    def finish(self, outcome: str) -> None:
        """End the display with a summary line (always written, never throttled)."""
        tally = self.finished_tally + self.live
        text = (
            f"kv-sync {outcome}: {self.invocations} invocation(s), "
            f"{tally.keys_listed} listed, {tally.keys_fetched} fetched, "
            f"{tally.records_written} written, {tally.records_unchanged} unchanged, "
            f"{tally.records_deleted} deleted, {tally.records_failed} failed "
            f"in {self.clock() - self.started:.1f}s"
        )
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    # Drawing --------------------------------------------------------------------

    def line(self) -> str:
        """The progress line as it is drawn now."""
        tally = self.finished_tally + self.live
        elapsed = self.clock() - self.started
        if self.total_names:
            done = min(self.names_done, self.total_names)
            filled = done * self.BAR_WIDTH // self.total_names
            head = (
                f"[{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] "
                f"{done}/{self.total_names} {done * 100 // self.total_names}%"
            )
        else:
            # A spinner shows the line is alive on a terminal; log files get none.
            spinner = f"{self.SPINNER[self._ticks % len(self.SPINNER)]} " if self.redraw else ""
            head = f"{spinner}listed {tally.keys_listed}"
        return (
            f"kv-sync {head} | fetched {tally.keys_fetched} written {tally.records_written} "
            f"unchanged {tally.records_unchanged} deleted {tally.records_deleted} "
            f"failed {tally.records_failed} | invocation {self.invocations + self.in_flight} | "
            f"{elapsed:.1f}s"
        )

    def draw(self, *, force: bool = False) -> None:
        """Show the current line (in place on a terminal, at most every ``min_interval``)."""
        now = self.clock()
        if (
            self.redraw
            and not force
            and self._last_draw is not None
            and now - self._last_draw < self.min_interval
        ):
            return
        self._last_draw = now
        self._ticks += 1
        text = self.line()
        if not self.redraw:
            self.stream.write(text + "\n")
        else:
            width = self.width or shutil.get_terminal_size((100, 24)).columns
            text = text[: max(width - 1, 10)]
            self.stream.write("\r" + text + " " * max(self._shown - len(text), 0))
            self._shown = len(text)
        self.stream.flush()

    def clear(self) -> None:
        """Remove the line from the terminal (before other output, or at the end)."""
        if self.redraw and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self._shown = 0
            self.stream.flush()


class _AroundProgress(io.TextIOBase):
    """stderr for log lines while a progress line is on the terminal.

    Each write first clears the line; after a complete line it is drawn again.
    """

    def __init__(self, stream: IO[str], progress: ProgressLine) -> None:
        super().__init__()
        self._stream = stream
        self._progress = progress

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._progress.clear()
        written = self._stream.write(text)
        if text.endswith("\n"):
            self._progress.draw(force=True)
        return written

    def flush(self) -> None:
        self._stream.flush()


@contextlib.contextmanager
def page_hook(callback: Callable[[Any, int | None], None]) -> Iterator[bool]:
    """Call ``callback(stats, offset)`` after every page of a multi-key run.

    The function's ``bulk._Run`` processes one page per ``names_page`` or
    ``listing_page`` call; both are wrapped in this process while inside, and
    restored on exit. ``stats`` is the run's ``BulkStats`` so far, ``offset``
    the number of names done (``None`` for listings). Yields whether the hook
    is in place: if the function's internals change, progress falls back to
    one update per invocation. A failing callback never disturbs the sync.
    """
    import bulk

    run_class: Any = getattr(bulk, "_Run", None)
    originals: dict[str, Any] = {
        name: getattr(run_class, name)
        for name in ("names_page", "listing_page")
        if callable(getattr(run_class, name, None))
    }

    def wrap(original: Any) -> Any:
        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(self, *args, **kwargs)
            with contextlib.suppress(Exception):
                names = original is originals.get("names_page")
                callback(self.stats, getattr(result[0], "offset", None) if names else None)
            return result

        return wrapped

    for name, original in originals.items():
        setattr(run_class, name, wrap(original))
    try:
        yield bool(originals)
    finally:
        for name, original in originals.items():
            setattr(run_class, name, original)


# --------------------------------------------------------------------------- running


@dataclass
class RunOutcome:
    """What a sequence of invocations came to."""

    documents: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    # When not complete: the run that is unfinished, its cursor (if it gave one),
    # the names of later --key-names runs not started, and why --follow stopped.
    unfinished: Invocation | None = None
    cursor: str | None = None
    not_started: int = 0
    stopped: str | None = None


def run_invocations(
    handler: Handler,
    invocations: Sequence[Invocation],
    timeout_s: float,
    progress: Progress | None = None,
    *,
    follow: bool = False,
    max_invocations: int | None = None,
    on_document: Callable[[dict[str, Any]], None] | None = None,
    display: ProgressLine | None = None,
) -> RunOutcome:
    """Call the handler for each run, each call with a fresh Lambda-like context.

    Without ``follow`` each run is one call, and the first unfinished multi-key
    run ends the sequence. With it, a run that stops with a ``next_cursor`` is
    invoked again with that cursor until it is complete; it stops early on a
    failure document, when an invocation makes no progress (no page fits in
    ``timeout_s``), or after ``max_invocations`` calls, recording why.

    ``progress(done, total, document)`` is called after each call with the
    runs finished so far; ``on_document`` gets each document as it arrives
    (the CLI prints it); ``display`` is told about invocations.
    """
    outcome = RunOutcome()
    calls = 0
    names_base = 0
    for index, invocation in enumerate(invocations):
        event = dict(invocation.event)
        while True:
            if display is not None:
                display.start_invocation(names_base)
            raw = handler(event, LocalContext(timeout_s=timeout_s))
            document: dict[str, Any] = raw if isinstance(raw, dict) else {"success": False}
            calls += 1
            outcome.documents.append(document)
            if on_document is not None:
                on_document(document)
            complete, cursor = _completion(document)
            if display is not None:
                names_done = (
                    names_base + invocation.names if complete and invocation.names else None
                )
                display.invocation_done(document, names_done)
            if progress is not None:
                progress(index + int(complete), len(invocations), document)
            if complete:
                break
            outcome.complete, outcome.unfinished, outcome.cursor = False, invocation, cursor
            outcome.not_started = sum(later.names or 0 for later in invocations[index + 1 :])
            if not follow:
                return outcome
            outcome.stopped = _why_stop(document, event, cursor, calls, max_invocations)
            if outcome.stopped is not None:
                return outcome
            event = {**invocation.event, "cursor": cursor}
            outcome.complete, outcome.unfinished, outcome.cursor = True, None, None
            outcome.not_started = 0
        names_base += invocation.names or 0
    return outcome


def _completion(document: Mapping[str, Any]) -> tuple[bool, str | None]:
    """Whether a document ends its run, and the cursor to continue it with.

    Single-key documents, and requests rejected before a run started, always
    end it (their ``success`` says how it went).
    """
    statistics = document.get("statistics")
    stats = statistics if isinstance(statistics, Mapping) else {}
    if "complete" not in stats:
        return True, None
    cursor = stats.get("next_cursor")
    complete = stats.get("complete") is True and "error" not in document
    return complete, cursor if isinstance(cursor, str) and cursor else None


def _why_stop(
    document: Mapping[str, Any],
    event: Mapping[str, Any],
    cursor: str | None,
    calls: int,
    max_invocations: int | None,
) -> str | None:
    """Why ``--follow`` cannot go on after ``document``, or ``None``."""
    error = document.get("error")
    if isinstance(error, Mapping):
        return f"{error.get('type', 'error')}: {error.get('message', '')}"
    if cursor is None:
        return "the function returned no next_cursor"
    stats = document.get("statistics")
    moved = Tally.of(stats if isinstance(stats, Mapping) else {})
    if cursor == event.get("cursor") and moved == Tally():
        return "no page fits in one invocation; raise --timeout"
    if max_invocations is not None and calls >= max_invocations:
        return f"--max-invocations {max_invocations} reached"
    return None


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
        # The function must never invoke the deployed function from a laptop;
        # --follow continues runs here instead.
        "SELF_INVOKE_CONTINUATION": "false",
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


def progress_wanted(config: RunConfig, err: IO[str]) -> bool:
    """Whether to draw the progress line: multi-key runs, forced or on a terminal."""
    if not config.is_bulk or config.progress is False:
        return False
    if config.progress:
        return True
    isatty = getattr(err, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def run(config: RunConfig, *, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run the invocations of ``config``, printing each response document as it arrives.

    Returns
    -------
    int
        0 when every document says ``success`` (and a ``--follow`` completed),
        1 otherwise, 130 when interrupted.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    invocations = build_invocations(config)
    display: ProgressLine | None = None
    if progress_wanted(config, err):
        isatty = getattr(err, "isatty", None)
        display = ProgressLine(
            err,
            total_names=sum(i.names or 0 for i in invocations) if config.key_names else None,
            redraw=bool(isatty()) if callable(isatty) else False,
        )
    log_stream: IO[str] = err
    if display is not None and display.redraw:
        log_stream = cast("IO[str]", _AroundProgress(err, display))

    def emit(document: dict[str, Any]) -> None:
        if display is not None:
            display.clear()
        print(json.dumps(document, indent=2, ensure_ascii=False, default=str), file=out)
        out.flush()

    outcome: RunOutcome | None = None
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
        level, emf = ("INFO", log_stream) if config.verbose else ("WARNING", io.StringIO())
        stack.enter_context(powertools_output(log_stream, level, emf))
        if display is not None:
            stack.enter_context(page_hook(display.page))
        try:
            outcome = run_invocations(
                handler,
                invocations,
                config.timeout_s,
                follow=config.follow,
                max_invocations=config.max_invocations,
                on_document=emit,
                display=display,
            )
        except KeyboardInterrupt:
            if display is not None:
                display.finish("interrupted")
            print("kv-sync: interrupted", file=err)
            return EXIT_INTERRUPTED
    return _report(config, outcome, display, err)


def _report(
    config: RunConfig, outcome: RunOutcome, display: ProgressLine | None, err: IO[str]
) -> int:
    """Finish the progress line, say how to resume, and choose the exit status."""
    if display is not None:
        if outcome.stopped is not None:
            display.finish("stopped")
        else:
            display.finish("done" if outcome.complete else "paused")
    if outcome.stopped is not None:
        print(f"kv-sync: --follow stopped: {outcome.stopped}", file=err)
    if not outcome.complete and outcome.unfinished is not None:
        what = f"kv-sync: the run of {outcome.unfinished.label} is not complete"
        if outcome.cursor is None:
            print(f"{what} and gave no cursor; run it again", file=err)
        elif outcome.not_started or len(config.key_names or ()) > MAX_KEY_NAMES_PER_EVENT:
            later = f" ({outcome.not_started} more name(s) not started)"
            print(
                f"{what}{later if outcome.not_started else ''}; run again with --follow", file=err
            )
        else:
            print(
                f"{what}; continue with --cursor {outcome.cursor} (same selector), or use --follow",
                file=err,
            )
    succeeded = all(document.get("success") is True for document in outcome.documents)
    unfinished = config.follow and not outcome.complete
    return 0 if succeeded and not unfinished else 1


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
