"""One "container" of the concurrent load test, run in its own (spawned) process.

It imports the real handler with the environment pointed at the parent's moto server
and KV emulator, waits at the barrier so every worker starts together, then invokes
the handler ``invocations`` times for random keys (direct events, Function URL
requests and small ``key_names`` batches). It reports per invocation the latency and
the outcome, and every DynamoDB write that landed (key, ``synced_at``, content hash,
version), which the parent checks against the table.

Kept free of pytest imports so spawning a worker stays cheap.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

Write = tuple[str, str, str, int]  # key, synced_at, content_sha256, version


def _version(record: Any) -> int:
    value = record.attributes.get("value")
    try:
        return int(json.loads(value)["version"])
    except (TypeError, ValueError, KeyError):
        return -1


def run(
    worker_id: int,
    env: dict[str, str],
    keys: list[str],
    invocations: int,
    barrier: Any,
    results: Any,
) -> None:
    """Entry point of a worker process; puts one result dict on ``results``."""
    os.environ.update(env)
    # Logs and EMF go to stdout; keep them out of the test's output.
    sys.stdout = Path(os.devnull).open("w")  # noqa: SIM115 - lives as long as the process
    unhandled: list[str] = []
    writes: list[Write] = []
    samples: list[tuple[float, float, str, str]] = []  # start, latency, outcome, kind
    try:
        from kv_sync import store
        from kv_sync.handler import lambda_handler
        from local.lambda_context import LambdaContext

        def recording(real: Any) -> Any:
            """``real`` (``store.write(table, record, ...)``), noting each write that lands."""

            def call(table: str, record: Any, *args: Any, **kwargs: Any) -> bool:
                landed: bool = real(table, record, *args, **kwargs)
                if landed:
                    writes.append(_landed(record))
                return landed

            return call

        store.write = recording(store.write)
        store.refresh = recording(store.refresh)

        rng = random.Random(worker_id)
        barrier.wait(120)
        for number in range(invocations):
            kind, event = _event(rng, keys, number)
            started = time.time()
            clock = time.perf_counter()
            try:
                response = lambda_handler(event, LambdaContext(timeout_ms=30_000))
                outcome = _outcome(response)
            except BaseException as exc:  # the test's whole point: none may escape
                unhandled.append("".join(traceback.format_exception(exc))[-2000:])
                outcome = "UNHANDLED"
            samples.append((started, time.perf_counter() - clock, outcome, kind))
    except BaseException as exc:
        unhandled.append("worker crashed: " + "".join(traceback.format_exception(exc))[-2000:])
    results.put({"worker": worker_id, "samples": samples, "writes": writes, "unhandled": unhandled})


def _landed(record: Any) -> Write:
    return (
        record.attributes["key"],
        record.synced_at,
        record.content_sha256,
        _version(record),
    )


def _event(rng: random.Random, keys: list[str], number: int) -> tuple[str, dict[str, Any]]:
    """Mostly direct single-key events; every 5th a Function URL, every 20th a batch."""
    if number % 20 == 19:
        return "batch", {"key_names": rng.sample(keys, 3)}
    key = rng.choice(keys)
    if number % 5 == 2:
        return "url", {
            "version": "2.0",
            "rawPath": "/",
            "headers": {"content-type": "application/json"},
            "requestContext": {
                "http": {"method": "POST", "path": "/", "sourceIp": "127.0.0.1"},
                "requestId": str(uuid.uuid4()),
            },
            "body": json.dumps({"key_name": key}),
            "isBase64Encoded": False,
        }
    return "direct", {"key_name": key}


def _outcome(response: Any) -> str:
    """``ok``, ``superseded``, ``partial:...`` or the error type."""
    document = response
    if isinstance(response, dict) and "statusCode" in response:
        document = json.loads(response["body"])
    if not isinstance(document, dict):
        return "MALFORMED"
    if document.get("success"):
        record = (document.get("data") or {}).get("record") or {}
        superseded = (document.get("statistics") or {}).get("records_superseded", 0)
        if record.get("superseded") or superseded:
            return "superseded"
        return "ok"
    error = document.get("error")
    if isinstance(error, dict):
        return str(error.get("type"))
    failed = (document.get("data") or {}).get("failed_keys") or []
    return "partial:" + ",".join(sorted({f["type"] for f in failed}))
