"""Reader benchmark: ``kv_sync_reader.KVMirror`` on records the real sync wrote to moto server.

The stack is the other benchmarks' (moto server and the KV emulator, both in
this process); the function (``kv_sync`` in-process, tracing off) syncs the
namespace once: the benchmark key (a small JSON flag with metadata) and 100
more. Then, in this process, over real HTTP to moto server:

1. **Cached get**: ``get`` of a cached key, each call timed alone.
   Target: p50 under 5 µs.
2. **Uncached get**: ``get`` with ``cache_ttl=0`` (one ``GetItem`` and the
   decoding) against a raw boto3 ``get_item`` of the same item, alternating
   call by call, each with its own client. Target: p50 at most 1.1 x the raw p50.
3. **No thundering herd**: 8 threads read the 100 keys round and round for 10 s
   with ``cache_ttl=1``. Target: DynamoDB calls at most keys x refreshes + 8,
   refreshes = ceil(duration / cache_ttl).

Checked as it goes (exit 1 otherwise): the sync completes, every read gives the
value KV holds, no reader thread fails. ``--strict`` also exits 1 when a target
is missed.

Usage: ``python benchmarks/reader.py [--quick] [--strict] [--duration S]``
(``--quick``: a few hundred calls and a 1.5 s herd run; its figures mean nothing).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "reader"), str(ROOT / "lambda_function"), str(ROOT)]

from benchmarks._support import common  # noqa: E402
from benchmarks._support.stack import KEY, VALUE, start_stack  # noqa: E402

if TYPE_CHECKING:
    import argparse

    from benchmarks._support.stack import Stack

KEYS = 100
THREADS = 8
HERD_CACHE_TTL = 1.0
TARGET_CACHED_P50_US = 5.0
TARGET_UNCACHED_RATIO = 1.1


def _parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--cached", type=int, default=200_000, help="cached gets to time")
    parser.add_argument("--uncached", type=int, default=1_000, help="uncached gets (and raw)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the herd run")
    args = common.parse(parser)
    if args.quick:
        args.cached, args.uncached, args.duration = 2_000, 40, 1.5
    return args


def _value(index: int) -> str:
    return json.dumps({"enabled": index % 2 == 0, "percentage": index, "owner": f"team-{index}"})


def _client(stack: Stack) -> Any:
    import boto3

    return boto3.client("dynamodb", endpoint_url=stack.moto_url, region_name="us-east-1")


def _sync(stack: Stack, names: list[str]) -> None:
    """Put the keys in the emulator and let the function sync the whole namespace."""
    for index, name in enumerate(names):
        stack.emulator.put(stack.namespace_id, name, _value(index))
    os.environ.update(
        stack.aws_env(),
        POWERTOOLS_LOG_LEVEL="ERROR",
        POWERTOOLS_METRICS_DISABLED="true",
        POWERTOOLS_TRACE_DISABLED="true",
        CLOUDFLARE_REQUESTS_PER_5_MINUTES="100000",
    )
    from kv_sync import handler
    from local.lambda_context import LambdaContext

    with contextlib.redirect_stdout(io.StringIO()):  # its logs and EMF documents
        reply = handler.lambda_handler({"all": True}, LambdaContext())
    if not reply.get("data", {}).get("complete"):
        raise SystemExit(f"the sync did not complete: {json.dumps(reply)[:500]}")


def _cached_get(stack: Stack, n: int) -> list[float]:
    """Microseconds of each cached ``get``."""
    from kv_sync_reader import KVMirror

    mirror = KVMirror(stack.table, stack.namespace_id, cache_ttl=3_600, client=_client(stack))
    _expect(mirror.get(KEY), VALUE, "cached get")
    get, clock = mirror.get, time.perf_counter_ns
    samples = []
    for _ in range(n):
        started = clock()
        get(KEY)
        samples.append((clock() - started) / 1_000)
    return samples


def _uncached_get(stack: Stack, n: int) -> tuple[list[float], list[float]]:
    """Milliseconds of each uncached ``get`` and of each raw ``get_item``, alternating."""
    from kv_sync_reader import KVMirror

    mirror = KVMirror(stack.table, stack.namespace_id, cache_ttl=0, client=_client(stack))
    raw_client = _client(stack)
    key = {"pk": {"S": f"NAMESPACE#{stack.namespace_id}"}, "sk": {"S": f"KEY#{KEY}"}}

    def raw() -> Any:
        return raw_client.get_item(TableName=stack.table, Key=key, ConsistentRead=False)

    def reader() -> Any:
        return mirror.get(KEY)

    _expect(reader(), VALUE, "uncached get")
    _expect(raw()["Item"]["value"]["S"], VALUE, "raw get_item")
    for _ in range(max(5, n // 20)):  # warm both connection pools and code paths
        raw(), reader()
    times: dict[str, list[float]] = {"reader": [], "raw": []}
    for index in range(n):
        pair = [("reader", reader), ("raw", raw)]
        for name, call in pair if index % 2 else reversed(pair):
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1_000)
    return times["reader"], times["raw"]


def _herd(stack: Stack, names: list[str], duration: float) -> dict[str, Any]:
    """8 threads reading every key round and round with ``cache_ttl=1``; DynamoDB calls counted."""
    from kv_sync_reader import KVMirror

    client = _client(stack)
    lock = threading.Lock()
    calls: dict[str, int] = {}

    def count(params: dict[str, Any], **_: Any) -> None:
        with lock:
            name = params["Key"]["sk"]["S"]
            calls[name] = calls.get(name, 0) + 1

    client.meta.events.register("before-parameter-build.dynamodb.GetItem", count)
    mirror = KVMirror(stack.table, stack.namespace_id, cache_ttl=HERD_CACHE_TTL, client=client)
    expected = {name: _value(index) for index, name in enumerate(names)}
    reads = [0] * THREADS
    errors: list[str] = []
    start = threading.Barrier(THREADS + 1)
    deadline = [0.0]

    def read(thread: int) -> None:
        start.wait()
        offset, done = thread * len(names) // THREADS, 0
        try:
            while time.monotonic() < deadline[0]:
                name = names[(offset + done) % len(names)]
                if mirror.get(name) != expected[name]:
                    errors.append(f"thread {thread}: wrong value of {name!r}")
                    return
                done += 1
        except Exception as error:  # reported, and the run fails
            errors.append(f"thread {thread}: {error!r}")
        finally:
            reads[thread] = done

    threads = [threading.Thread(target=read, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + duration
    start.wait()
    for thread in threads:
        thread.join()
    refreshes = math.ceil(duration / HERD_CACHE_TTL)
    return {
        "reads": sum(reads),
        "calls": sum(calls.values()),
        "max_per_key": max(calls.values(), default=0),
        "refreshes": refreshes,
        "bound": len(names) * refreshes + THREADS,
        "errors": errors,
    }


def _expect(got: Any, want: Any, what: str) -> None:
    if got != want:
        raise SystemExit(f"{what}: read {got!r}, KV holds {want!r}")


def main() -> int:
    args = _parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    os.environ.pop("AWS_PROFILE", None)
    names = [f"flags/{index:03d}" for index in range(KEYS)]
    with start_stack() as stack:
        _sync(stack, names)
        cached = _cached_get(stack, args.cached)
        uncached, raw = _uncached_get(stack, args.uncached)
        herd = _herd(stack, names, args.duration)

    cached_p50 = common.percentile(cached, 50)
    ratio = common.percentile(uncached, 50) / common.percentile(raw, 50)
    print(f"Reader: KVMirror on records the function synced to moto server ({KEYS + 1} keys)")
    common.print_machine()
    common.print_table(
        "Reader get latency",
        ["read", "calls", "p50", "p90", "p99", "unit"],
        [
            ["cached get", len(cached), *_percentiles(cached), "µs"],
            ["uncached get (cache_ttl=0)", len(uncached), *_percentiles(uncached), "ms"],
            ["raw boto3 get_item", len(raw), *_percentiles(raw), "ms"],
        ],
    )
    common.print_table(
        f"Reader under {THREADS} threads ({args.duration:g} s, cache_ttl={HERD_CACHE_TTL:g})",
        ["keys", "reads", "DynamoDB calls", "most calls for one key", "refreshes", "bound"],
        [
            [
                KEYS,
                herd["reads"],
                herd["calls"],
                herd["max_per_key"],
                herd["refreshes"],
                herd["bound"],
            ]
        ],
    )
    print(f"\nuncached get p50 / raw get_item p50: {ratio:.3f}")
    print(
        f"DynamoDB calls {herd['calls']} <= {KEYS} keys x {herd['refreshes']} refreshes "
        f"+ {THREADS} = {herd['bound']}"
    )
    if herd["errors"]:
        print("error: " + "; ".join(herd["errors"][:5]), file=sys.stderr)
        return 1
    targets = [
        common.Target("cached get p50", cached_p50, TARGET_CACHED_P50_US, " µs"),
        common.Target("uncached get p50 / raw GetItem p50", ratio, TARGET_UNCACHED_RATIO),
        common.Target("DynamoDB calls under 8 threads", herd["calls"], herd["bound"], " calls"),
    ]
    return common.report_targets(targets, strict=args.strict)


def _percentiles(values: list[float]) -> list[float]:
    return [common.percentile(values, pct) for pct in (50, 90, 99)]


if __name__ == "__main__":
    sys.exit(main())
