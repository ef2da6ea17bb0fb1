"""Bulk sync benchmark: the whole namespace, against a per-key loop, same process.

Seeds the KV emulator with N keys (mixed sizes, some binary, some with metadata),
then runs three syncs of the whole namespace against moto server:

1. the first sync (every record new),
2. a re-sync with nothing changed,
3. a re-sync after 5 % of the values changed and 1 % of the keys were deleted.

The function is the ``kv_sync`` package, its handler called in this process
(tracing off) with the one fake Lambda context. Each run sits beside a per-key
loop in the same process that does what a naive implementation would: for every
key one value read, one metadata read and one unconditional PutItem. Printed per
run: keys/s, Cloudflare calls per key, DynamoDB read calls, DynamoDB write units
per key (estimated as DynamoDB bills them: a write costs one unit per started KB
of the item, a failed conditional write costs the same, a delete costs the
deleted item's size) and write calls of records (the run's own items, its lease
and its sync state, are counted apart: 3 writes a run).

Checked as it goes (exit 1 otherwise): every run completes, and the re-sync with
nothing changed writes no record to DynamoDB.

Usage: ``python benchmarks/bulk_sync.py [--keys N]`` (``make bench`` runs it;
``--quick`` syncs 300 keys).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lambda_function"), str(ROOT)]

from benchmarks._support import common  # noqa: E402

if TYPE_CHECKING:
    import argparse

# Records carry ~350 bytes of attributes besides the value (names, hashes, times).
RECORD_OVERHEAD_BYTES = 350
TOKEN = "bench-token"


QUICK_KEYS = 300
WRITES = {"UpdateItem", "PutItem", "DeleteItem"}
READS = {"BatchGetItem", "Query", "GetItem"}


def _parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__ or "")
    parser.add_argument("--keys", type=int, default=10_000, help="keys to seed (default 10000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    args = common.parse(parser)
    if args.quick:
        args.keys = min(args.keys, QUICK_KEYS)
    return args


def _value(rng: random.Random, i: int) -> bytes:
    kind = i % 100
    if kind == 0:
        return bytes([0xFF, 0xFE]) + rng.randbytes(rng.randint(16, 512))  # binary, 1 %
    if kind < 40:
        return json.dumps({"id": i, "enabled": bool(i % 3), "pct": i % 100}).encode()
    size = rng.choice([32, 256, 2_048, 8_192])
    return (f"value-{i}-" * (size // 8 + 1))[:size].encode()


class Meter:
    """Counts Cloudflare requests (from the emulator), DynamoDB reads and write units.

    The function writes from a thread pool, so the counts take a lock.
    """

    def __init__(self, emulator: Any, sizes: dict[str, int]) -> None:
        self.emulator = emulator
        self.sizes = sizes
        self.write_units = 0.0
        self.write_calls = 0
        self.state_calls = 0  # writes of the run's own items (lease, sync state)
        self.read_calls = 0
        self._lock = threading.Lock()

    def hook(self, client: Any) -> None:
        client.meta.events.register("before-parameter-build.dynamodb.*", self._before)

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        with self._lock:
            if model.name in READS:
                self.read_calls += 1
            elif model.name in WRITES:
                key = params["Key"]["sk"]["S"] if "Key" in params else params["Item"]["sk"]["S"]
                if key.startswith("#"):
                    self.state_calls += 1
                    return
                size = self.sizes.get(key[len("KEY#") :], 0) + RECORD_OVERHEAD_BYTES
                self.write_units += math.ceil(size / 1024)
                self.write_calls += 1

    def reset(self) -> None:
        self.emulator.reset_stats()
        with self._lock:
            self.write_units = 0.0
            self.write_calls = 0
            self.state_calls = 0
            self.read_calls = 0


def _per_key_loop(
    emulator: Any, namespace_id: str, dynamodb: Any, table: str, keys: list[str]
) -> None:
    """The naive sync: value read, metadata read and a PutItem for every key."""
    import requests

    session = requests.Session()
    base = (
        f"{emulator.base_url}/accounts/{emulator.account_id}/storage/kv/namespaces/{namespace_id}"
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for key in keys:
        segment = quote(key, safe="")
        value = session.get(f"{base}/values/{segment}", headers=headers, timeout=10)
        if value.status_code == 404:
            continue
        meta = session.get(f"{base}/metadata/{segment}", headers=headers, timeout=10).json()
        item: dict[str, Any] = {
            "pk": {"S": f"LOOP#{namespace_id}"},
            "sk": {"S": f"KEY#{key}"},
            "value": {"B": value.content},
        }
        if meta.get("result") is not None:
            item["metadata"] = {"S": json.dumps(meta["result"])}
        dynamodb.put_item(TableName=table, Item=item)


def main() -> int:
    args = _parse_args()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_LOG_LEVEL="ERROR",
        POWERTOOLS_METRICS_DISABLED="true",
        POWERTOOLS_TRACE_DISABLED="true",
    )
    os.environ.pop("AWS_PROFILE", None)
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from local import aws_setup
    from local.kv_emulator import KVEmulator

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    emulator = KVEmulator(tokens=[TOKEN]).start()
    try:
        return _run(args, emulator, endpoint, boto3, aws_setup)
    finally:
        emulator.stop()
        moto.stop()


def _run(args: argparse.Namespace, emulator: Any, endpoint: str, boto3: Any, aws_setup: Any) -> int:
    namespace_id = emulator.create_namespace("bench")
    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
    secrets = boto3.client("secretsmanager", endpoint_url=endpoint)
    aws_setup.create_table(dynamodb, point_in_time_recovery=False)
    aws_setup.create_secret(secrets)
    aws_setup.put_credentials(
        secrets,
        {
            "api_token": TOKEN,
            "account_id": emulator.account_id,
            "kv_namespace_id": namespace_id,
            "kv_namespace": "bench",
        },
    )
    os.environ.update(
        DYNAMODB_TABLE_NAME=aws_setup.TABLE_NAME,
        SECRETS_MANAGER_SECRET_NAME=aws_setup.SECRET_NAME,
        CLOUDFLARE_API_BASE_URL=emulator.base_url,
        CLOUDFLARE_REQUESTS_PER_5_MINUTES="100000",
    )

    rng = random.Random(args.seed)
    keys = [f"bench/{i:06d}" for i in range(args.keys)]
    sizes: dict[str, int] = {}
    for i, key in enumerate(keys):
        value = _value(rng, i)
        metadata = {"rev": i, "weight": 0.5} if i % 10 == 0 else None
        emulator.put(namespace_id, key, value, metadata=metadata)
        sizes[key] = len(value)

    from kv_sync import handler, runtime
    from local.lambda_context import LambdaContext

    meter = Meter(emulator, sizes)
    meter.hook(runtime.client("dynamodb"))
    meter.hook(dynamodb)

    def sync_run() -> tuple[float, dict[str, Any]]:
        meter.reset()
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # its EMF documents
            response = handler.lambda_handler(
                {"all": True, "delete_missing": True}, LambdaContext(timeout_ms=900_000)
            )
        elapsed = time.perf_counter() - started
        if not response.get("data", {}).get("complete"):
            raise SystemExit(f"bulk sync did not complete: {json.dumps(response)[:500]}")
        return elapsed, response["statistics"]

    def loop_run(present: list[str]) -> float:
        meter.reset()
        started = time.perf_counter()
        _per_key_loop(emulator, namespace_id, dynamodb, aws_setup.TABLE_NAME, present)
        return time.perf_counter() - started

    rows: list[list[object]] = []

    def record(run: str, how: str, elapsed: float, n: int) -> None:
        calls = len(emulator.requests)
        rows.append(
            [
                run,
                how,
                f"{n / elapsed:.0f}",
                f"{calls / n:.3f}",
                meter.read_calls,
                f"{meter.write_units / n:.3f}",
                meter.write_calls,
            ]
        )

    n = len(keys)
    elapsed, _ = sync_run()
    record("first sync", "kv-sync", elapsed, n)
    record("first sync", "per-key loop", loop_run(keys), n)

    elapsed, unchanged = sync_run()
    unchanged_writes, unchanged_state = meter.write_calls, meter.state_calls
    record("nothing changed", "kv-sync", elapsed, n)
    record("nothing changed", "per-key loop", loop_run(keys), n)

    changed = rng.sample(keys, max(1, n * 5 // 100))
    for key in changed:
        value = f"changed-{rng.random()}".encode()
        emulator.put(namespace_id, key, value)
        sizes[key] = len(value)
    deleted = set(rng.sample([k for k in keys if k not in set(changed)], max(1, n // 100)))
    for key in deleted:
        emulator.delete(namespace_id, key)
    elapsed, stats = sync_run()
    record("5 % changed, 1 % deleted", "kv-sync", elapsed, n)
    present = [k for k in keys if k not in deleted]
    record("5 % changed, 1 % deleted", "per-key loop", loop_run(present), n)

    print(f"Bulk sync: {n} keys, the whole namespace, three runs against moto server")
    common.print_machine()
    common.print_table(
        f"Bulk sync ({n} keys)",
        ["run", "how", "keys/s", "Cloudflare calls/key", "DDB reads", "write units/key", "writes"],
        rows,
    )
    print(
        f"\nnothing changed, kv-sync: {unchanged['records_unchanged']} unchanged, "
        f"{unchanged['dynamodb_writes']} DynamoDB record writes reported, {unchanged_writes} made; "
        f"{unchanged_state} writes of the run's own items (lease taken and released, sync state)"
    )
    print(
        f"last kv-sync run: written {stats['records_written']}, "
        f"unchanged {stats['records_unchanged']}, deleted {stats['records_deleted']}, "
        f"{stats['dynamodb_writes']} DynamoDB writes, {stats['dynamodb_batches']} DynamoDB reads"
    )
    if unchanged_writes or unchanged["dynamodb_writes"]:
        print(
            f"error: the unchanged re-sync wrote to DynamoDB ({unchanged_writes} calls)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
