"""What the local tools (``local.runner``, ``local.demo``) share to run the function in-process."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

LAMBDA_DIR = Path(__file__).resolve().parent.parent / "lambda_function"
if str(LAMBDA_DIR) not in sys.path:
    sys.path.append(str(LAMBDA_DIR))

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def load_handler() -> Handler:
    """``kv_sync.handler.lambda_handler``; import it after setting the environment."""
    from kv_sync.handler import lambda_handler

    handler: Handler = lambda_handler
    return handler


@contextlib.contextmanager
def patched_environ(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (``None``: remove) environment variables; restore them on exit."""

    def apply(values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    saved = {name: os.environ.get(name) for name in changes}
    try:
        apply(changes)
        yield
    finally:
        apply(saved)


@contextlib.contextmanager
def powertools_output(
    stream: IO[str], level: str | None = None, metrics_stream: IO[str] | None = None
) -> Iterator[None]:
    """Send the function's log lines to ``stream`` and its EMF documents to ``metrics_stream``.

    The logger writes to the stream it was created with and EMF is printed to
    stdout; both go elsewhere while inside, so stdout keeps only results.
    """
    from kv_sync.observability import logger, metrics

    handler = cast("Any", logger.registered_handler)  # a logging.StreamHandler
    previous_stream, previous_level = handler.stream, logger.log_level
    handler.stream = stream  # not setStream(): it flushes the old stream, maybe closed
    if level is not None:
        logger.setLevel(level)
    try:
        with contextlib.redirect_stdout(metrics_stream or stream):
            yield
    finally:
        metrics.clear_metrics()  # with POWERTOOLS_METRICS_DISABLED nothing else clears them
        handler.stream = previous_stream
        logger.setLevel(previous_level)


def print_json(data: Any, out: IO[str]) -> None:
    """Print a document as indented JSON."""
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str), file=out, flush=True)


def cli_exit(entry: Callable[[], int]) -> None:
    """Exit with ``entry()``'s status; a closed stdout (``| head``) exits 1 quietly."""
    try:
        status = entry()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at devnull so that cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    sys.exit(status)
